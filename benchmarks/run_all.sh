#!/usr/bin/env bash
# Every benchmark behind benchmarks/RESULTS.md's "Tolerance map", "Same floor, three policies" and
# "Search efficiency" sections and README's "Why per-length budgets", then the report.
#
#     bash benchmarks/run_all.sh          # ~15 min on 2 CPU cores with a cold cache, ~1-2 min warm
#
# Evaluations are cached in benchmarks/out/cache/ (delete it to recompute everything); the second
# model and the profiles are rebuilt only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ST=${SPARSETUNE:-.venv/bin/sparsetune}
OUT=benchmarks/out
SEEDS=${SEEDS:-10}
mkdir -p "$OUT"
step() { echo "== $* ($((SECONDS))s)"; }

step "search efficiency: the exhaustive grid on the search split, then TPE and random replays"
$PY benchmarks/search_efficiency.py --model demo --seeds "$SEEDS"

step "tolerance map"
$PY benchmarks/tolerance.py --model demo

step "demo profile: the committed one, else the README's search command into $OUT"
PROFILE=profiles/demo.yaml
if [ ! -f "$PROFILE" ]; then
  PROFILE=$OUT/demo_profile.yaml
  [ -f "$PROFILE" ] || $ST search --model demo --workload demo --trials 20 -o "$PROFILE"
fi
# the same search with the floor on the 90% paired lower confidence bound (an extra row)
[ -f "$OUT/demo_conf90.yaml" ] || $ST search --model demo --workload demo --trials 20 --confidence 0.9 -o "$OUT/demo_conf90.yaml"
$PY benchmarks/policies.py --model demo --profile "$PROFILE" \
  --also "search with the floor on the 90% lower confidence bound=$OUT/demo_conf90.yaml"

step "second model: the demo recipe with seed 1 (scripts/train_demo.py), its own search, three policies"
if [ ! -f "$OUT/model2/config.json" ]; then
  $PY scripts/train_demo.py --seed 1 --out "$OUT/model2_run"
  $PY scripts/train_demo.py --seed 1 --out "$OUT/model2_run" --export "$OUT/model2"
fi
[ -f "$OUT/model2_profile.yaml" ] || $ST search --model "$OUT/model2" --workload demo --trials 20 -o "$OUT/model2_profile.yaml"
$PY benchmarks/policies.py --model "$OUT/model2" --profile "$OUT/model2_profile.yaml" --name model2

step "report"
$PY benchmarks/report.py
step "done"
