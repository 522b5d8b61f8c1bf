"""Shared fixtures: repository paths, the example profile, and the CLI run in-process or as a subprocess."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# Triton fixes compiled-vs-interpreted when a kernel module is first imported, and any test may be
# the first to import it. Without a GPU every kernel must run under the interpreter, so decide
# here, before any test module imports sparsetune.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "profiles" / "example.yaml"
DEMO_WORKLOAD = REPO / "sparsetune" / "demo" / "workload.jsonl"


def demo_slice(tmp_path: Path, lengths=(256, 512), per_task: int = 2, answers: bool = True) -> Path:
    """A few demo samples per task at the given lengths (lengths include BOS and answer), as JSONL."""
    import json

    rows, seen = [], {}
    for line in DEMO_WORKLOAD.read_text().splitlines():
        row = json.loads(line)
        key = (len(row["prompt"].split()) + len(row["answer"].split()) + 1, row["task"])
        if key[0] in lengths and seen.get(key, 0) < per_task:
            seen[key] = seen.get(key, 0) + 1
            rows.append(row if answers else {"prompt": row["prompt"], "task": row["task"]})
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE


@pytest.fixture
def example_dict() -> dict[str, Any]:
    """The example profile as raw YAML data; a fresh copy per test, free to mutate."""
    return copy.deepcopy(_example_raw())


_RAW: list[dict[str, Any]] = []


def _example_raw() -> dict[str, Any]:
    if not _RAW:
        _RAW.append(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    return _RAW[0]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run `sparsetune ARGS...` in-process through `main`, with its error mapping."""
    from sparsetune.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def sparsetune_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m sparsetune.cli`."""
    script = Path(sys.executable).with_name("sparsetune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sparsetune.cli"]


@pytest.fixture
def run_cli_process():
    """Run the real `sparsetune` command in a subprocess (what a user's shell does)."""

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        proc = subprocess.run([*sparsetune_command(), *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, "SPARSETUNE_DEBUG": "", **(env or {})}, timeout=120, cwd=REPO)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
