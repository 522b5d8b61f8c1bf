"""The CPU sparse path (`attention/gather.py`) of a git revision against this checkout's, interleaved in one process.

    .venv/bin/python benchmarks/gather_ab.py --base REV [--reps 15] [--threads 1]

Timings of separate processes on a shared VM differ by more than a change to this path is worth (page faults,
neighbours), so both versions run in one process, call after call, on the same q/k/v and block mask: the
demo's evaluation shapes (batch 2 of 4 query heads, 2 KV heads at 2k tokens; batch 4 at 1k) and SmolLM2's
(1, 9, 3) at 4k, head_dim 64, sink 1, local 1, the pooled estimator. Reports the median and the minimum of
`--reps` calls per version (ms), with dense causal SDPA for scale, and checks the two agree (fp32, 1e-5).
Writes benchmarks/out/gather_ab.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from sparsetune import Budget
from sparsetune.attention import gathered_attention, select_blocks
from sparsetune.attention.dispatch import dense_causal_attention

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
CASES = [  # batch, query heads, KV heads, tokens, block, keep
    (2, 4, 2, 2048, 64, 0.3), (2, 4, 2, 2048, 64, 0.7), (2, 4, 2, 2048, 32, 0.5), (4, 4, 2, 1024, 32, 0.5),
    (1, 9, 3, 4096, 64, 0.2),
]


def _module_at(rev: str):
    """`sparsetune/attention/gather.py` as it is at `rev`, imported as a module of the package (its relative
    imports resolve to this checkout's, which the path's interface has not changed)."""
    text = subprocess.run(["git", "show", f"{rev}:sparsetune/attention/gather.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    module = types.ModuleType("sparsetune.attention.gather_base")
    module.__package__ = "sparsetune.attention"
    exec(compile(text, f"{rev}:sparsetune/attention/gather.py", "exec"), module.__dict__)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    base = _module_at(args.base).gathered_attention
    rows = []
    for b, hq, hkv, n, block, keep in CASES:
        gen = torch.Generator().manual_seed(n + block)
        q = torch.randn(b, hq, n, 64, generator=gen)
        k, v = (torch.randn(b, hkv, n, 64, generator=gen) for _ in range(2))
        mask = select_blocks(q, k, Budget(keep=keep, block_size=block, sink=1, local=1))
        fns = {"base": lambda: base(q, k, v, mask), "here": lambda: gathered_attention(q, k, v, mask),
               "dense": lambda: dense_causal_attention(q, k, v)}
        if not torch.allclose(fns["base"](), fns["here"](), atol=1e-5, rtol=1e-5):
            sys.exit(f"the two versions disagree at {(b, hq, hkv, n, block, keep)}")
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.reps):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
        row = {"shape": [b, hq, hkv, n], "block": block, "keep": keep,
               **{f"{name}_ms": round(statistics.median(t), 1) for name, t in times.items()},
               **{f"{name}_min_ms": round(min(t), 1) for name, t in times.items()}}
        rows.append(row)
        print(row, flush=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch "
                       f"{torch.__version__}", "command": " ".join(["benchmarks/gather_ab.py", *sys.argv[1:]]),
            "base": args.base}
    OUT.mkdir(exist_ok=True)
    (OUT / "gather_ab.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"| shape (B, Hq, Hkv, tokens) | block | keep | {args.base} ms (min) | here ms (min) | dense SDPA ms |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {tuple(r['shape'])} | {r['block']} | {r['keep']} | {r['base_ms']} ({r['base_min_ms']}) | "
              f"{r['here_ms']} ({r['here_min_ms']}) | {r['dense_ms']} |")


if __name__ == "__main__":
    main()
