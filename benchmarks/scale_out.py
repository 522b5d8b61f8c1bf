"""Scale-out on one machine, measured honestly: one single-threaded worker against two single-threaded workers on
one shared study, the same total trials, as a wall-time ratio in one run.

    .venv/bin/python benchmarks/scale_out.py [--trials 12] [--workers 2]

Each run is the demo search (`--model demo --workload demo`, four buckets, `--trials` per bucket) on a fresh
journal file (Optuna's JournalFileStorage, the one-machine storage) with `--threads 1`; the two workers are
started together on the same journal. Reports both walls, the ratio, how the trials split between workers, and
whether the two-worker profile's budgets equal the one-worker profile's or not (concurrent trials draw other
seeds, so they need not). Writes benchmarks/out/scale_out.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench as B

from sparsetune import load_profile
from sparsetune.search import study_progress
from sparsetune.search.storage import open_storage

ST = str(Path(sys.executable).with_name("sparsetune"))


def _search(journal: Path, out: Path, trials: int) -> subprocess.Popen:
    cmd = [ST, "search", "--model", "demo", "--workload", "demo", "--trials", str(trials), "--threads", "1",
           "--storage", str(journal), "--study", "scale", "-o", str(out), "--force", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _run(workdir: Path, workers: int, trials: int) -> dict:
    journal = workdir / f"w{workers}.journal"
    start = time.perf_counter()
    procs = [_search(journal, workdir / f"w{workers}_{i}.yaml", trials) for i in range(workers)]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - start
    codes = [p.returncode for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed ({codes}): {errors}")
    budgets = [{b.max_len: None if b.budget is None else b.budget.to_dict()
                for b in load_profile(workdir / f"w{workers}_{i}.yaml").buckets} for i in range(workers)]
    progress = study_progress(open_storage(str(journal), journal), "scale")
    return {"workers": workers, "wall_s": round(wall, 1), "budgets": budgets[0],
            "workers_agree": all(b == budgets[0] for b in budgets),
            "trials": {p.max_len: {"complete": p.complete, "failed": p.failed} for p in progress}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        one = _run(Path(tmp), 1, args.trials)
        print(f"one worker: {one['wall_s']} s", flush=True)
        many = _run(Path(tmp), args.workers, args.trials)
        print(f"{args.workers} workers: {many['wall_s']} s", flush=True)
    ratio = one["wall_s"] / many["wall_s"]
    result = {"trials_per_bucket": args.trials, "one": one, "many": many, "speedup": round(ratio, 3),
              "target": 1.7, "same_budgets_as_one_worker": one["budgets"] == many["budgets"], "meta": B.meta(started)}
    B.write_json(B.OUT / "scale_out.json", result)
    print(f"speed-up with {args.workers} single-threaded workers: {ratio:.2f}x (target 1.7x); wrote {B.OUT / 'scale_out.json'}")


if __name__ == "__main__":
    main()
