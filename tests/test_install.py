"""A fresh install works from the repository root: the repo's `kernels/` never shadows PyPI's `kernels`
(which transformers >= 5.25 imports when a model class loads), `python -m sparsetune` runs, and the lock
that set-up installs from is complete and exact."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

# Run with the repository root as the working directory and `-c`, which puts the root first on sys.path
# exactly as `python -m pytest` and `python -m sparsetune` do.
_PROBE = textwrap.dedent("""
    import importlib.util, json
    out = {}
    try:
        import transformers.integrations.hub_kernels  # imports PyPI's `kernels` where transformers needs it
        out["hub_kernels"] = "ok"
    except ModuleNotFoundError as exc:
        out["hub_kernels"] = "absent" if exc.name == "transformers.integrations.hub_kernels" else repr(exc)
    except ImportError as exc:
        out["hub_kernels"] = repr(exc)
    import sparsetune.kernels.configs, sparsetune.kernels.block_sparse_attn
    out["ours"] = sparsetune.kernels.block_sparse_attn.__file__
    spec = importlib.util.find_spec("kernels")
    out["kernels"] = None if spec is None else spec.origin
    print(json.dumps(out))
""")


def _pypi_kernels_installed() -> bool:
    try:
        importlib.metadata.version("kernels")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_the_repo_root_never_shadows_pypi_kernels_and_sparsetune_kernels_still_imports():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hub_kernels"] in ("ok", "absent"), out["hub_kernels"]
    assert out["ours"].endswith("block_sparse_attn.py")
    if _pypi_kernels_installed():  # then `import kernels` from the root is PyPI's, never the repo's folder
        assert out["kernels"] is not None and not out["kernels"].startswith(str(REPO / "kernels")), out
    # What makes that hold whatever is installed: the folder is at most a namespace portion, which any
    # installed `kernels` package outranks, and nothing at the root is a module named `kernels`.
    assert not (REPO / "kernels" / "__init__.py").exists()
    assert not any((REPO / f"kernels{suffix}").exists() for suffix in (".py", ".pyc", ".so"))


def test_python_dash_m_sparsetune_runs_from_the_repo_root():
    proc = subprocess.run([sys.executable, "-m", "sparsetune", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert "Usage: sparsetune" in proc.stdout and "search" in proc.stdout


LOCK = REPO / "requirements.lock"


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"requirements.lock: not an exact pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_the_lock_pins_every_direct_dependency_exactly():
    pins = _locked()
    for name in ("torch", "triton", "transformers", "optuna", "typer", "rich", "pyyaml", "safetensors",
                 "tokenizers", "matplotlib", "pytest", "hypothesis", "psycopg2-binary", "gguf", "accelerate",
                 "fastapi", "uvicorn", "kernels"):
        assert name in pins, f"requirements.lock has no pin for {name}"
    assert "+" not in pins["torch"], "the lock pins torch without a local build tag, so CUDA and CPU builds both match"
    assert "sparsetune" not in pins


@pytest.mark.skipif(os.environ.get("SPARSETUNE_UNLOCKED") == "1", reason="scripts/check-latest.sh: newest versions")
def test_this_environment_is_the_locked_one():
    """Set-up installs the lock (CI therefore tests exactly it); a drifted .venv says which package moved."""
    moved = []
    for name, version in _locked().items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a platform's extra (e.g. a CUDA-only wheel) may be absent here
        if have.split("+")[0] != version:
            moved.append(f"{name} {have} (locked {version})")
    assert not moved, "not the locked set; rerun bash scripts/setup.sh: " + ", ".join(moved)
