#!/usr/bin/env bash
# See upstream drift before users do: build a fresh venv with the newest versions pyproject.toml allows,
# ignoring requirements.lock, say which packages moved from the lock, then run the fast tests, the
# install tests (kernels shadowing, python -m sparsetune) and the serve tests against them.
#   bash scripts/check-latest.sh        # run it before regenerating the lock, and weekly (or in a cron CI job)
# Exit code: the tests'. A pass means `bash scripts/lock.sh` can move the lock forward safely.
# torch stays at the lock's version unless SPARSETUNE_TORCH_SPEC says otherwise (SPARSETUNE_TORCH_SPEC=torch: the
# newest, which on the default index is a multi-GB CUDA build). Environment: PYTHON, SPARSETUNE_TORCH_SPEC, KEEP=1 keeps the venv
# (in .venv-latest) for a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
torch_spec=${SPARSETUNE_TORCH_SPEC:-torch==$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.lock)}
venv=.venv-latest
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$venv"' EXIT
say() { echo "check-latest: $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  say "fresh venv $venv ($("$python" --version 2>&1), $torch_spec, the rest the newest allowed)"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "$torch_spec"
fi
echo "$torch_spec" > "$venv/torch-constraint.txt"  # eager upgrades would otherwise move torch (and its triton) too
"$venv/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager -c "$venv/torch-constraint.txt" \
  -e '.[test,postgres,gguf,serve]'

say "moved from requirements.lock (package: locked -> newest):"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md, re
moved = 0
for line in open("requirements.lock"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, version = line.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        continue
    if have.split("+")[0] != version:
        moved += 1
        print(f"  {name}: {version} -> {have}")
print(f"  ({moved} moved)" if moved else "  (none: the lock is current)")
PY

say "fast tests + install + serve tests on the newest versions"
SPARSETUNE_UNLOCKED=1 "$venv/bin/python" -m pytest -q -m "not slow" tests/ \
  && SPARSETUNE_UNLOCKED=1 "$venv/bin/python" -m pytest -q tests/test_install.py tests/test_serve.py
