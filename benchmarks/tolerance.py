"""The tolerance map: accuracy against sparsity per length bucket and task, over an exhaustive keep grid.

    .venv/bin/python benchmarks/tolerance.py [--model demo] [--splits search,heldout]

Block size, sink and local are fixed (`_bench.SLICE`: block 64, sink 1, local 1); keep runs over
`_bench.KEEPS`. Every sample of both splits is evaluated (no early stop), and the splits are pooled
(n = 64 per bucket, 16 per task and bucket on the demo workloads). Sparsity is the prefill mask's
skipped / visible key blocks at the bucket's length (topk counts do not depend on content).
The table's last column, the highest sparsity meeting the floor anywhere in the whole grid (any block
size, sink, local), comes from the search split's exact scan in benchmarks/search_efficiency.py (run it first).

Writes benchmarks/out/tolerance_<model>.json and tolerance_<model>.png.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import _bench as B

from sparsetune.profile.floor import TOLERANCE, floor_target


def collect(model: str, splits: list[str]) -> dict[str, Any]:
    buckets: list[dict[str, Any]] = []
    points = [B.Fixed(keep=k, **B.SLICE) for k in B.KEEPS]
    benches = [B.Bench(model, s) for s in splits]
    for b, edge in enumerate(benches[0].edges):
        rows = []
        dense_by_task: dict[str, list[int]] = {}
        for bench in benches:
            d = bench.result(b, None, "full")
            for task, v in d.per_task().items():
                acc = dense_by_task.setdefault(task, [0, 0])
                acc[0] += v["dense"]
                acc[1] += v["n"]
        for p in points:
            by_task: dict[str, list[int]] = {}
            sparsity = []
            measured = []
            for bench in benches:
                r = bench.result(b, p, "full")
                for task, v in r.per_task().items():
                    acc = by_task.setdefault(task, [0, 0])
                    acc[0] += v["sparse"]
                    acc[1] += v["n"]
                sparsity.append(bench.sparsity(b, p))
                measured.append(r.measured_sparsity)
            rows.append({"keep": p.keep, "sparsity": round(sum(sparsity) / len(sparsity), 4),
                         "measured_sparsity": round(sum(measured) / len(measured), 4),
                         "tasks": {t: {"correct": c, "n": n} for t, (c, n) in sorted(by_task.items())}})
        buckets.append({"max_len": edge, "dense": {t: {"correct": c, "n": n} for t, (c, n) in sorted(dense_by_task.items())},
                        "rows": rows})
        print(f"bucket {edge}: done ({sum(x.evaluations for x in benches)} chunks evaluated so far)", flush=True)
    return {"buckets": buckets, "evaluations": sum(x.evaluations for x in benches)}


def summarize(data: dict[str, Any], grid_rows: list[dict[str, Any]] | None) -> None:
    """Add, per bucket and task, the highest sparsity meeting the floor (and whether a less sparse keep missed)."""
    for bk in data["buckets"]:
        tasks = sorted(bk["dense"])
        summary = {}
        for task in ["all"] + tasks:
            def counts(tasks_dict: dict[str, Any]) -> tuple[int, int]:
                sel = tasks if task == "all" else [task]
                return sum(tasks_dict[t]["correct"] for t in sel), sum(tasks_dict[t]["n"] for t in sel)

            dc, n = counts(bk["dense"])
            target = floor_target(B.FLOOR_RULE, dc / n)
            ok = []
            for row in bk["rows"]:
                c, _ = counts(row["tasks"])
                row.setdefault("accuracy", {})[task] = c / n
                ok.append((row["sparsity"], row["keep"], c / n >= target - TOLERANCE))
            ok.sort()
            feasible = [(s, k) for s, k, f in ok if f]
            best = max(feasible) if feasible else (0.0, 1.0)
            # non-monotone: some keep with less sparsity than the best missed the floor (noise at small n)
            gap = any(not f and s < best[0] for s, k, f in ok)
            summary[task] = {"max_sparsity": best[0], "keep": best[1], "dense_accuracy": dc / n, "n": n,
                             "target": target, "non_monotone": gap}
        if grid_rows:  # the search split's sparsest feasible grid point (search_efficiency.py's exact scan)
            bk["grid_best"] = next((g["sparsest"] for g in grid_rows if g["max_len"] == bk["max_len"]), None)
        bk["summary"] = summary


def plot(data: dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = data["buckets"]
    fig, axes = plt.subplots(1, len(buckets), figsize=(3.6 * len(buckets), 3.4), sharey=True, squeeze=False)
    colors = {"niah": "tab:blue", "multikey": "tab:green", "mv": "tab:orange", "vt": "tab:red", "cwe": "tab:purple"}
    for ax, bk in zip(axes[0], buckets):
        rows = sorted(bk["rows"], key=lambda r: r["sparsity"])
        xs = [r["sparsity"] for r in rows]
        for task in sorted(bk["dense"]):
            ax.plot(xs, [r["accuracy"][task] for r in rows], marker=".", lw=1, color=colors.get(task),
                    label=f"{task} (n={bk['summary'][task]['n']})")
        ax.plot(xs, [r["accuracy"]["all"] for r in rows], marker="o", lw=2.2, color="black", label="all tasks")
        ax.axhline(bk["summary"]["all"]["target"], color="gray", ls="--", lw=1, label="floor (all)")
        ax.set_title(f"{bk['max_len']} tokens", fontsize=10)
        ax.set_xlabel("sparsity (skipped / visible blocks)")
        ax.set_xlim(-0.02, 1.0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact-match accuracy")
    axes[0][0].legend(fontsize=7, loc="lower left")
    s = B.SLICE
    fig.suptitle(f"{data['model']}: accuracy vs sparsity (topk, block {s['block_size']}, sink {s['sink']}, "
                 f"local {s['local']}; keep {min(B.KEEPS)}-1; splits: {'+'.join(data['splits'])})", fontsize=10)
    B.save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--splits", default="search,heldout")
    args = ap.parse_args()
    B.use_suite(args.model)
    started = time.time()
    splits = [s for s in args.splits.split(",") if s]
    name = B.model_label(args.model)
    data = {"model": name, "splits": splits, "slice": B.SLICE, "keeps": B.KEEPS, "floor": B.FLOOR}
    data.update(collect(args.model, splits))
    eff_path = B.OUT / f"search_efficiency_{name}.json"
    grid_rows = json.loads(eff_path.read_text())["buckets"] if eff_path.is_file() else None
    summarize(data, grid_rows)
    data["meta"] = B.meta(started)
    plot(data, B.OUT / f"tolerance_{name}.png")
    B.write_json(B.OUT / f"tolerance_{name}.json", data)
    print(f"wrote {B.OUT / f'tolerance_{name}.json'} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
