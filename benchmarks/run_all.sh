#!/usr/bin/env bash
# Every benchmark behind benchmarks/RESULTS.md's "Tolerance map", "Same floor, three policies" and
# "Search efficiency" sections and README's "Why per-length budgets", then the report.
#
#     bash benchmarks/run_all.sh          # cold cache: an hour on a busy 2-core machine; warm: a few minutes
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
TIMES=$OUT/run_all_times.tsv
printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" > "$TIMES.tmp"
last=$SECONDS
step() {  # close the previous step's timing, announce the next
  [ -z "${current:-}" ] || printf '%s\t%s\n' "$current" "$((SECONDS - last))" >> "$TIMES.tmp"
  current=$1; last=$SECONDS
  echo "== $current (${SECONDS}s)"
}

step "search efficiency (demo): grid scan, TPE and random replays"
$PY benchmarks/search_efficiency.py --model demo --seeds "$SEEDS"

step "tolerance map (demo)"
$PY benchmarks/tolerance.py --model demo

step "three policies (demo; profile searched if missing)"
PROFILE=profiles/demo.yaml
if [ ! -f "$PROFILE" ]; then
  PROFILE=$OUT/demo_profile.yaml
  [ -f "$PROFILE" ] || $ST search --model demo --workload demo --trials 20 -o "$PROFILE"
fi
$PY benchmarks/policies.py --model demo --profile "$PROFILE"

step "second model (train and search if missing), three policies"
if [ ! -f "$OUT/model2/config.json" ]; then
  $PY scripts/train_demo.py --seed 1 --out "$OUT/model2_run"
  $PY scripts/train_demo.py --seed 1 --out "$OUT/model2_run" --export "$OUT/model2"
fi
[ -f "$OUT/model2_profile.yaml" ] || $ST search --model "$OUT/model2" --workload demo --trials 20 -o "$OUT/model2_profile.yaml"
$PY benchmarks/policies.py --model "$OUT/model2" --profile "$OUT/model2_profile.yaml" --name model2

step "done"
printf 'total\t%s\n' "$SECONDS" >> "$TIMES.tmp"
mv "$TIMES.tmp" "$TIMES"
$PY benchmarks/report.py
