"""Print the profile's JSON Schema, or check a file against it.

    python -m sparsetune.profile_schema > profiles/profile.schema.json
    python -m sparsetune.profile_schema --check profiles/profile.schema.json   # exit 1 if stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from .profile import json_schema_text

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stdout.write(json_schema_text())
        return 0
    if len(args) == 2 and args[0] == "--check":
        path = Path(args[1])
        if path.is_file() and path.read_text(encoding="utf-8") == json_schema_text():
            return 0
        print(f"{path}: out of date; regenerate with: python -m sparsetune.profile_schema > {path}",
              file=sys.stderr)
        return 1
    print("usage: python -m sparsetune.profile_schema [--check FILE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
