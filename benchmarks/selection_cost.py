"""What selection costs beside the sparse attention call it serves, per estimator, on this CPU.

    .venv/bin/python benchmarks/selection_cost.py [--lengths 1024,2048,4096] [--keep 0.2] [--threads 1]
        [--estimators pooled,sampled/16,...] [--shape 1,9,3] [--block 64] [--out benchmarks/out/selection_cost.json]

Random q/k/v in fp32, head_dim 64, sink 1, local 1, in SmolLM2-135M's attention shape by default (`--shape`
batch,query heads,KV heads: 1,9,3; the demo model's evaluation batches at 2k tokens are 2,4,2). Per length and
estimator: the median of `--reps` timings of `select_blocks` alone and of `sparse_attention` (selection plus
the CPU sparse path), selection's share of the whole call, and dense causal SDPA for scale. The issue's target:
sampled (stride 16) selection <= 15% of the sparse call at 2k tokens.

Writes `--out` (benchmarks/out/selection_cost.json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sparsetune.attention import select_blocks, sparse_attention
from sparsetune.attention.dispatch import dense_causal_attention
from sparsetune.profile.budget import Budget

OUT = Path(__file__).resolve().parent / "out"


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="1024,2048,4096")
    ap.add_argument("--keep", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--estimators", default="pooled,sampled/16,sampled/8,antidiagonal/8,vslash,quest,oracle",
                    help="comma-separated NAME[/STRIDE]")
    ap.add_argument("--shape", default="1,9,3", help="batch,query heads,KV heads")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--out", default=str(OUT / "selection_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    rows = []
    batch, heads, kv_heads = map(int, args.shape.split(","))
    for length in map(int, args.lengths.split(",")):
        gen = torch.Generator().manual_seed(length)
        q = torch.randn(batch, heads, length, 64, generator=gen)
        k, v = (torch.randn(batch, kv_heads, length, 64, generator=gen) for _ in range(2))
        dense_ms = _median_ms(lambda: dense_causal_attention(q, k, v), args.reps)
        for estimator, stride in ((name, int(stride) if stride else None) for name, _, stride in
                                  (e.partition("/") for e in args.estimators.split(","))):
            budget = Budget(keep=args.keep, block_size=args.block, sink=1, local=1, estimator=estimator,
                            stride=stride)
            select_ms = _median_ms(lambda: select_blocks(q, k, budget), args.reps)
            call_ms = _median_ms(lambda: sparse_attention(q, k, v, budget), args.reps)
            rows.append({"tokens": length, "estimator": estimator, "stride": stride, "keep": args.keep,
                         "select_ms": round(select_ms, 2), "call_ms": round(call_ms, 2),
                         "share": round(select_ms / call_ms, 3), "dense_ms": round(dense_ms, 2)})
            print(rows[-1], flush=True)
    OUT.mkdir(exist_ok=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch "
                       f"{torch.__version__}", "command": "benchmarks/selection_cost.py " + " ".join(
                           f"--{k} {v}" for k, v in vars(args).items())}
    Path(args.out).write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print("| tokens | estimator | select ms | sparse call ms | selection share | dense SDPA ms |\n|---|---|---|---|---|---|")
    for r in rows:
        name = r["estimator"] + (f"/{r['stride']}" if r["stride"] else "")
        print(f"| {r['tokens']} | {name} | {r['select_ms']} | {r['call_ms']} | {100 * r['share']:.0f}% | "
              f"{r['dense_ms']} |")


if __name__ == "__main__":
    main()
