"""How much of the true attention mass each estimator's blocks keep, on q/k captured from a real model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimator_recall.py --model smollm2 --lengths 1000,2000,4000

Cheap beside `estimator_map.py` (one dense forward per sample, no decoding), so it reaches lengths the
accuracy map cannot on 2 cores. Per sample (the estimator map's text-style niah + multikey draws, seed 1601)
one dense forward records every layer's post-rotary q and k (a registered attention function that calls
SDPA unchanged). Per layer, KV head and query block, the true mass (`oracle`: the exact causal softmax of
every query, mean over the block's queries and the group's heads) is compared with the blocks each
estimator keeps under topk (block 64, sink 1, local 1). The sink and local blocks hold most of the mass and
every estimator keeps them, so recall counts only the rest: of the true mass outside the always-kept blocks,
the share inside the blocks the estimator chose. Reported: the mean over rows (KV head x query block, rows
with anything to choose) and the last query block's mean (the question, which the
answer is decoded from). The oracle's own recall is the ceiling at the same keep.

Writes benchmarks/out/estimator_recall_<model>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = ROOT / "benchmarks" / "out"
ESTIMATORS = (("pooled", None), ("sampled", 16), ("antidiagonal", 8), ("vslash", None), ("quest", None),
              ("oracle", None))


def _capture(model: Any, input_ids: Any) -> list[tuple[Any, Any, float]]:
    """(q, k, scale) of every attention layer in one dense forward, q/k as the attention function sees them."""
    import torch
    from transformers import AttentionInterface

    seen: list[tuple[Any, Any, float]] = []
    sdpa = AttentionInterface()["sdpa"]

    def capture(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        seen.append((query.detach().clone(), key.detach().clone(), scaling or query.shape[-1] ** -0.5))
        return sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)

    AttentionInterface.register("sparsetune_capture", capture)
    previous = model.config._attn_implementation
    model.set_attn_implementation("sparsetune_capture")
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([input_ids]))
    finally:
        model.set_attn_implementation(previous)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--lengths", default="1000,2000,4000")
    ap.add_argument("--samples", type=int, default=4, help="per length (half niah, half multikey)")
    ap.add_argument("--keeps", default="0.2,0.1")
    args = ap.parse_args()

    import torch

    from estimator_map import _workload
    from sparsetune.attention import select_blocks
    from sparsetune.attention.estimate import block_logits
    from sparsetune.evaluate import load_inputs
    from sparsetune.evaluate.inputs import load_more
    from sparsetune.profile.budget import Budget

    torch.set_grad_enabled(False)
    keeps = [float(x) for x in args.keeps.split(",")]
    results: dict[str, Any] = {"model": args.model, "command": "benchmarks/estimator_recall.py " + " ".join(sys.argv[1:]),
                               "machine": "2 CPU cores, OMP_NUM_THREADS as set, no GPU", "rows": []}
    loaded = None
    for length in (int(x) for x in args.lengths.split(",")):
        source = str(_workload(args.model, length, 8))
        if loaded is None:
            loaded, work = load_inputs(args.model, source)
        else:
            work = load_more(loaded, source)
        by_task: dict[str, list[Any]] = {}
        for s in work.samples:
            by_task.setdefault(s.task, []).append(s)
        picked = [s for i in range(args.samples) for t in sorted(by_task) if i < len(by_task[t])
                  for s in [by_task[t][i]]][:args.samples]
        stats: dict[tuple[str, float], list[torch.Tensor]] = {}
        last: dict[tuple[str, float], list[float]] = {}
        started = time.perf_counter()
        for sample in picked:
            for q, k, scale in _capture(loaded.model, list(sample.input_ids)):
                truth = block_logits(q, k, Budget(keep=0.5, block_size=64, estimator="oracle"), scale).exp()
                truth = torch.nan_to_num(truth)  # invisible blocks: exp(-inf) = 0 already; nothing else is NaN
                always = select_blocks(q, k, Budget(keep=1e-9, block_size=64, sink=1, local=1), scale).to_block_bool()
                free = (truth * ~always).sum(-1)  # [B, Hkv, QB]: the mass an estimator has to find
                rows = free > 1e-6
                for est, stride in ESTIMATORS:
                    for keep in keeps:
                        budget = Budget(keep=keep, block_size=64, sink=1, local=1, estimator=est, stride=stride)
                        kept = select_blocks(q, k, budget, scale).to_block_bool()  # [B, Hkv, QB, KB]
                        recall = (truth * (kept & ~always)).sum(-1) / free.clamp(min=1e-12)
                        stats.setdefault((est, keep), []).append(recall[rows])
                        last.setdefault((est, keep), []).append(float(recall[:, :, -1].mean()))
        for (est, keep), parts in stats.items():
            allr = torch.cat(parts)
            results["rows"].append({"tokens": length, "estimator": est, "keep": keep, "samples": len(picked),
                                    "mean": round(float(allr.mean()), 4),
                                    "last_block": round(sum(last[(est, keep)]) / len(last[(est, keep)]), 4)})
        print(f"{length}: {len(picked)} samples in {time.perf_counter() - started:.0f} s", flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"estimator_recall_{args.model}.json").write_text(json.dumps(results, indent=1))
    print("| tokens | keep | " + " | ".join(e for e, _ in ESTIMATORS) + " |")
    print("|---|---|" + "---|" * len(ESTIMATORS))
    for length in sorted({r["tokens"] for r in results["rows"]}):
        for keep in keeps:
            cells = []
            for est, _ in ESTIMATORS:
                r = next(r for r in results["rows"] if r["tokens"] == length and r["keep"] == keep and r["estimator"] == est)
                cells.append(f"{r['mean']:.3f} (last {r['last_block']:.3f})")
            print(f"| ~{length} | {keep:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
