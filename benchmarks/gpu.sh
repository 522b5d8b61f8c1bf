#!/usr/bin/env bash
# Block-sparse attention on one CUDA GPU (H100/H200): correctness first, then the speed table.
#
#   OUT=/some/dir benchmarks/gpu.sh            # or: benchmarks/gpu.sh --out /some/dir
#   benchmarks/gpu.sh --lengths 4096 16384     # any gpu_bench.py flag passes through
#
# Installs nothing from the network: torch and triton must be present; the package itself is
# installed in place (--no-deps, --no-build-isolation) only if it is not importable, and
# gpu_bench.py falls back to the checkout if even that fails. Hard stop at 7m50s; the script
# stops starting cases at 7 minutes and writes results after every case.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

"$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if ! "$PY" -c "import sparsetune.kernels" 2>/dev/null; then
  "$PY" -m pip install -e . --no-deps --no-build-isolation -q || echo "gpu.sh: pip install failed; gpu_bench.py uses the checkout"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true

exec timeout --signal=INT --kill-after=15 470 "$PY" benchmarks/gpu_bench.py "$@"
