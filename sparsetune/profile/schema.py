"""The profile's JSON Schema, generated from the dataclasses; print it, or check a file against it.

    python -m sparsetune.profile.schema > profiles/profile.schema.json
    python -m sparsetune.profile.schema --check profiles/profile.schema.json   # exit 1 if stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ._typed import schema_of
from .budget import ESTIMATORS, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Budget
from .profile import Profile

__all__ = ["json_schema", "json_schema_text", "main"]

# Budget lives in budget.py without schema metadata; its rules are mirrored here (and tested).
_BUDGET_SCHEMA: dict[str, dict[str, Any]] = {
    "method": {"description": "topk or coverage; defaults to the profile's method", "default": None},
    "block_size": {"description": f"tokens per sparse block, for queries and keys; a power of two in "
                                  f"[{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]",
                   "minimum": MIN_BLOCK_SIZE, "maximum": MAX_BLOCK_SIZE},
    "keep": {"description": "topk only: fraction of causally visible key blocks kept per query block",
             "exclusiveMinimum": 0, "maximum": 1},
    "tau": {"description": "coverage only: estimated attention mass the kept blocks must reach (not with peak)",
            "exclusiveMinimum": 0, "maximum": 1},
    "sink": {"description": "first key blocks always kept (attention sinks)", "minimum": 0},
    "local": {"description": "most recent key blocks always kept (the diagonal counts as one)", "minimum": 1},
    "estimator": {"description": "how key blocks are ranked: " + "; ".join(f"{s.name}: {s.summary}"
                                                                         for s in ESTIMATORS.values()),
                  "enum": list(ESTIMATORS)},
    "stride": {"description": "sampled and peak: every stride-th query of a block is scored exactly; antidiagonal: "
                              "the antidiagonal stride (a power of two <= block_size); absent: the estimator's default",
               "minimum": 1},
    "dense_layers": {"description": "first layers that attend densely (absent: 0)", "minimum": 0},
    "dense_tail": {"description": "last query blocks that keep every visible block; decode steps then run dense "
                                  "(absent: 0)", "minimum": 0},
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a profile, generated from the dataclasses."""
    defs: dict[str, Any] = {}
    schema_of(Profile, defs, {Budget: _BUDGET_SCHEMA})
    root = defs.pop("Profile")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sparsetune budget profile",
        **root,
        "description": (f"{root['description']} Generated from sparsetune/profile/profile.py "
                        f"(python -m sparsetune.profile.schema); the code is authoritative, e.g. for "
                        f"block sizes being powers of two and launch configs fitting the bucket's block_size (kernels/configs.py)."),
        "required": ["schema", *root["required"]],  # optional in code (defaulted), required in files
        "$defs": dict(sorted(defs.items())),
    }


def json_schema_text() -> str:
    """`json_schema` as the exact text of the shipped profiles/profile.schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stdout.write(json_schema_text())
        return 0
    if len(args) == 2 and args[0] == "--check":
        path = Path(args[1])
        if path.is_file() and path.read_text(encoding="utf-8") == json_schema_text():
            return 0
        print(f"{path}: out of date; regenerate with: python -m sparsetune.profile.schema > {path}",
              file=sys.stderr)
        return 1
    print("usage: python -m sparsetune.profile.schema [--check FILE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
