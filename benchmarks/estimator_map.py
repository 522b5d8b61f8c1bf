"""The estimator gap: per length and block estimator, the sparsity each tolerates at the floor, and the oracle's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimator_map.py --model smollm2 \
        --lengths 1000,2000,4000 --per-task 8 --keeps 0.5,0.35,0.2,0.1,0.05

Draws text-style niah + multikey samples (`workload synth`, seed 1601, cached in benchmarks/out), evaluates
dense once per length, then every estimator at every keep (block 64, sink 1, local 1), all samples, no early
stop. Tolerated sparsity: the highest prefill block sparsity whose accuracy is >= floor x dense (point
estimate, as the premise tables in RESULTS.md state it). Estimator gap: the oracle's tolerated sparsity minus
the estimator's. Resumes: every (length, budget) result is kept in the JSON as it finishes.

Writes benchmarks/out/estimator_map_<model>.json and prints the table (markdown) that RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
ESTIMATORS = ("pooled", "sampled", "antidiagonal", "vslash", "quest", "oracle")  # table order


def _workload(model: str, length: int, per_task: int) -> Path:
    path = OUT / f"estimator_map_{model}_{length}.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "sparsetune", "workload", "synth", "--model", model, "--style", "text",
                        "--tasks", "niah,multikey", "--lengths", str(length), "--per-length", str(per_task),
                        "--seed", "1601", "-o", str(path)], check=True, cwd=ROOT)
    return path


def _table(data: dict[str, Any], floor: float) -> str:
    """Per length: each estimator's correct count per keep, its tolerated block sparsity at the floor, and
    the estimator gap (the oracle's tolerated sparsity minus its own), for the estimators measured."""
    measured = [e for e in ESTIMATORS if any(r["estimator"] == e for v in data["lengths"].values() for r in v["runs"])]
    gapped = [e for e in measured if e != "oracle"]
    lines = ["| tokens | dense | " + " | ".join(f"{e} (keep: correct)" for e in measured)
             + " | tolerated sparsity: " + " / ".join(measured) + " | gap to oracle: " + " / ".join(gapped) + " |",
             "|---|---|" + "---|" * len(measured) + "---|---|"]
    for length, entry in sorted(data["lengths"].items(), key=lambda kv: int(kv[0])):
        dense, n = entry["dense"]["correct"], entry["dense"]["n"]
        cells, tolerated = [], {}
        for est in measured:
            rows = sorted((r for r in entry["runs"] if r["estimator"] == est), key=lambda r: -r["keep"])
            cells.append(", ".join(f"{r['keep']:g}: {r['correct']}" for r in rows) or "-")
            ok = [r["sparsity"] for r in rows if r["correct"] >= floor * dense]
            tolerated[est] = max(ok, default=0.0) if rows else None
        oracle = tolerated.get("oracle")
        gaps = ["-" if oracle is None or tolerated[e] is None else f"{100 * (oracle - tolerated[e]):.0f}"
                for e in gapped]
        lines.append(f"| ~{length} | {dense}/{n} | " + " | ".join(cells) + " | "
                     + " / ".join("-" if tolerated[e] is None else f"{100 * tolerated[e]:.0f}%" for e in measured)
                     + " | " + " / ".join(gaps) + " points |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--lengths", default="1000,2000,4000")
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--keeps", default="0.5,0.35,0.2,0.1,0.05")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))  # the oracle is slow: a dense pass per layer
    ap.add_argument("--stride", type=int, default=None,
                    help="the stride of the estimators that have one (default: each one's declared default)")
    ap.add_argument("--floor", type=float, default=0.95)
    args = ap.parse_args()

    from sparsetune.attention import select_blocks
    from sparsetune.evaluate import load_inputs
    from sparsetune.evaluate.inputs import load_more
    from sparsetune.evaluate.decode import evaluate
    from sparsetune.profile.budget import ESTIMATORS as ESTIMATOR_SPECS, Budget

    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"estimator_map_{args.model}.json"
    data = json.loads(path.read_text()) if path.exists() else {"model": args.model, "lengths": {}}
    data["machine"] = "2 CPU cores, OMP_NUM_THREADS as set, no GPU"
    keeps = [float(k) for k in args.keeps.split(",")]
    loaded = None
    for length in (int(x) for x in args.lengths.split(",")):
        source = str(_workload(args.model, length, args.per_task))
        if loaded is None:
            loaded, workload = load_inputs(args.model, source)
        else:
            workload = load_more(loaded, source)
        samples = workload.samples
        entry = data["lengths"].setdefault(str(length), {"runs": []})
        if "dense" not in entry:
            r = evaluate(loaded, samples, None)
            entry["dense"] = {"correct": sum(r.correct), "n": len(r.correct), "seconds": round(r.seconds, 1),
                              "per_task": {t: s.correct for t, s in r.per_task.items()}}
            path.write_text(json.dumps(data, indent=1))
        kv = max(len(s.input_ids) for s in samples)
        for est in args.estimators.split(","):
            for keep in keeps:
                if any(r["estimator"] == est and r["keep"] == keep for r in entry["runs"]):
                    continue
                budget = Budget(keep=keep, block_size=64, sink=1, local=1, estimator=est,
                                stride=args.stride if ESTIMATOR_SPECS[est].strides else None)
                t = time.perf_counter()
                r = evaluate(loaded, samples, budget)
                q = torch.randn(1, loaded.heads, kv, loaded.head_dim)
                sparsity = 1 - select_blocks(q, torch.randn(1, loaded.kv_heads, kv, loaded.head_dim), budget).density
                entry["runs"].append({"estimator": est, "stride": budget.stride, "keep": keep,
                                      "correct": sum(r.correct), "n": len(r.correct),
                                      "per_task": {tk: s.correct for tk, s in r.per_task.items()},
                                      "sparsity": round(sparsity, 4), "measured_sparsity": round(r.stats.sparsity, 4),
                                      "seconds": round(time.perf_counter() - t, 1)})
                path.write_text(json.dumps(data, indent=1))
                print(f"{length} {est} keep={keep}: {sum(r.correct)}/{len(r.correct)} "
                      f"(dense {entry['dense']['correct']}) {time.perf_counter() - t:.0f}s", flush=True)
    print(_table(data, args.floor))


if __name__ == "__main__":
    main()
