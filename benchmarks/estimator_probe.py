"""Probe block estimators that are not (yet) product code, on a few samples, by exact match against dense.

    sed -n '267p;286p;334p;335p;343p;354p' benchmarks/out/smollm2_search_1411.jsonl > c4k.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimator_probe.py --workload c4k.jsonl --variant lowrank16
    sed -n '267p;354p' benchmarks/out/smollm2_search_1411.jsonl > c4k2.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimator_probe.py --workload c4k2.jsonl --variant peak1 --layers 0-22

The probe swaps the `peak` estimator for a variant, then evaluates `--budget` (default keep 0.256, block 64, sink 1,
local 1: 73% block sparsity at 4k) with `sparsetune.evaluate`, one thread, batch 1. Variants, every one scoring
*every* query (the 4k diagnosis, RESULTS.md, found that the 1-in-16 sampler skips the queries that matter):

- ``peak1``: peak with stride 1, the exact per-query mass (the max over the block's queries): costs dense q.k.
- ``lowrankR``: q.k approximated in the top R principal directions of the keys (per KV head and call, from K^T K),
  every query scored against every key at R/D of the q.k work (Loki-style), then peak's per-query mass and max.
- ``questq``: every query's Quest bound per key block (q . centre + |q| . radius of the block's per-channel key
  range), softmax over blocks, max over the block's queries: D x (blocks) work per query, far below q.k.
- ``meank``: every query against the mean key of each block (keys pooled, queries not).
- ``qdevM``: peak's exact per-query mass for M queries per query block, not every stride-th one but the M whose
  queries (all heads together) lie furthest from their block's mean query: the atypical queries a fixed stride
  skips. Picking them costs one pass over q; scoring them M / block of q.k (M = 4 at block 64 is peak/16's work).
- ``qmixM``: peak/32's two strided queries per block of 64 plus the M most atypical ones.
- ``windowA:B[,C:D]``: peak's exact mass for every query at positions A..B-1 (C..D-1), peak/16's elsewhere
  (a diagnostic: where do the queries a stride skips matter?).
- ``salientM``: peak/16, plus every query of the last 3 query blocks and of the M key blocks those last queries
  attend to most (max mass over their heads and queries, sink and the last blocks aside): where a retrieval answer
  reads, the needle's own queries are scored exactly. About (3 + M) / blocks of q.k on top of peak/16's 1/16.
- ``salientM[tT][sS]``: the same with a tail of T query blocks (default 3) and every S-th query elsewhere
  (default 16).
- ``salientcolM`` / ``peakcolM``: salient/16 (peak/16) with the M key blocks the last query block reads most kept
  in every row from their own on (vertical lines through what the question reads).
- ``peakrot`` / ``salientrot``: peak/16 (salient/16) with the every-16th queries at a different offset for each
  head of a GQA group: the same q.k work, more positions seen by the group.
- ``sharepeakN``: every N-th layer scores every query exactly (peak, stride 1), and the N-1 layers after it rank
  blocks by the larger of that layer's masses and their own peak/16 (layers differ, so this is an approximation):
  every query is seen at 1/N + 1/16 of the q.k work per layer.

`--layers A-B` uses the variant only in layers A..B-1 and peak/16 elsewhere (prefill and decode calls run layers
0..L-1 in order per forward, so the call index modulo L is the layer). Appends one JSON line per run to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def _lowrank(rank: int):
    import torch

    from sparsetune.attention.estimate_sampled import sampled_logits

    def estimate(q, k, budget, scale):
        kf = k.float()
        basis = torch.linalg.eigh(kf.transpose(-1, -2) @ kf).eigenvectors[..., -rank:]  # [B, Hkv, D, R]
        per_head = basis.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        return sampled_logits(q.float() @ per_head, kf @ basis, budget.block_size, scale, 1, "max")
    return estimate


def _per_query(kind: str):
    import torch

    from sparsetune.attention.estimate_quest import block_extremes
    from sparsetune.attention.mask import block_grid

    def estimate(q, k, budget, scale):
        bs = budget.block_size
        batch, heads, seq_q, dim = q.shape
        kv_heads, seq_k = k.shape[1], k.shape[2]
        group = heads // kv_heads
        first, rows, cols = block_grid(seq_q, seq_k, bs)
        qf = q.float().reshape(batch, kv_heads, group * seq_q, dim) * scale
        if kind == "questq":
            lo, hi = block_extremes(k, bs)
            s = qf @ ((hi + lo) / 2).transpose(-1, -2) + qf.abs() @ ((hi - lo) / 2).transpose(-1, -2)
        else:
            kf = torch.nn.functional.pad(k.float(), (0, 0, 0, cols * bs - seq_k))
            s = qf @ kf.view(batch, kv_heads, cols, bs, dim).mean(3).transpose(-1, -2)
        s = s.view(batch, kv_heads, group, seq_q, cols)
        block_of = (torch.arange(seq_q) + seq_k - seq_q) // bs
        s = s.masked_fill(torch.arange(cols)[None, :] > block_of[:, None], -math.inf)
        p = torch.softmax(s, -1).amax(2)  # [B, Hkv, Sq, KB]: each query's mass per block, max over the group
        out = torch.zeros(batch, kv_heads, rows, cols)
        out.scatter_reduce_(2, (block_of - first)[None, None, :, None].expand_as(p), p, "amax")
        return out.log()
    return estimate


def _scored(q, k, block_size: int, scale: float, chosen):
    """Peak's block logits from exactly the queries `chosen` (a bool mask over the queries) marks."""
    from sparsetune.attention.estimate_sampled import sampled_logits

    return sampled_logits(q, k, block_size, scale, 1, "max", chosen.nonzero().squeeze(1))


def _atypical(count: int, stride: int | None):
    """`count` queries per query block furthest from the block's mean query (plus every `stride`-th, if given),
    scored exactly as peak scores its strided ones (`sampled_logits` with these positions)."""
    import torch

    def estimate(q, k, budget, scale):
        bs = budget.block_size
        seq_q, seq_k = q.shape[2], k.shape[2]
        pos = torch.arange(seq_k - seq_q, seq_k)
        qf = q.float()
        blocks = pos // bs
        first = int(blocks[0])
        nb = int(blocks[-1]) - first + 1
        mean = torch.zeros(*qf.shape[:2], nb, qf.shape[3]).index_add_(2, blocks - first, qf)
        mean /= torch.bincount(blocks - first, minlength=nb).clamp(min=1)[None, None, :, None]
        dev = (qf - mean[:, :, blocks - first]).norm(dim=-1).pow(2).sum(dim=(0, 1))  # [Sq], all heads together
        chosen = torch.zeros(seq_q, dtype=torch.bool)
        for b in range(nb):
            at = ((blocks - first) == b).nonzero().squeeze(1)
            chosen[at[dev[at].topk(min(count, at.numel())).indices]] = True
        if stride is not None:
            chosen |= pos % stride == stride - 1
        chosen[-1] = True
        return _scored(q, k, bs, scale, chosen)
    return estimate


def _window(*ranges: tuple[int, int]):
    """`windowA:B[,C:D...]`: every query at positions A..B-1 (and C..D-1, ...) scored exactly, peak/16's strided
    queries elsewhere."""
    import torch

    def estimate(q, k, budget, scale):
        seq_q, seq_k = q.shape[2], k.shape[2]
        pos = torch.arange(seq_k - seq_q, seq_k)
        chosen = pos % 16 == 15
        for lo, hi in ranges:
            chosen |= (pos >= lo) & (pos < hi)
        chosen[-1] = True
        return _scored(q, k, budget.block_size, scale, chosen)
    return estimate


def _salient(top: int, tail: int | None, stride: int):
    """`salientM[tT][sS]`: the product's `salient` estimator with M salient key blocks instead of an eighth of
    them, a tail of T query blocks instead of 3, and every S-th query elsewhere instead of every 16th."""
    import sparsetune.attention.estimate_salient as S
    from sparsetune.attention.estimate_sampled import sampled_logits

    def estimate(q, k, budget, scale):
        bs = budget.block_size
        chosen = S.salient_positions(q, k, bs, scale, stride, budget.sink, count=top,
                                     tail=S.TAIL_BLOCKS if tail is None else tail)
        return sampled_logits(q, k, bs, scale, stride, "max", chosen)
    return estimate


def _columns(top: int, base: str):
    """`salientcolM` / `peakcolM`: salient/16 (or peak/16) with the M key blocks the last query block reads most
    kept in every row from their own on (a vertical line through the blocks the question reads), as
    MInference's vertical lines keep columns every row needs; they take slots of the row's keep."""
    import sparsetune.attention.estimate_salient as S
    from sparsetune.attention.estimate_sampled import sampled_logits
    from sparsetune.attention.mask import block_grid

    def estimate(q, k, budget, scale):
        bs = budget.block_size
        first = block_grid(q.shape[2], k.shape[2], bs)[0]
        if base == "salient":
            out = S.salient_logits(q, k, bs, scale, 16, budget.sink)
        else:
            out = sampled_logits(q, k, bs, scale, 16, "max")
        for b in range(q.shape[0]):
            for col in S.salient_blocks(q[b:b + 1], k[b:b + 1], bs, scale, budget.sink, count=top):
                out[b, :, max(col - first, 0):, col] = 1e4  # every row from the column's own block on
        return out
    return estimate


def _rotated(salient: bool):
    """`peakrot` / `salientrot`: peak/16 (salient/16) whose every-16th queries differ per head of a GQA group
    (offsets spread over the stride), so the group sees its share of queries at several positions, at the same
    q.k work; each key block's largest mass over the heads' own queries."""
    import torch

    import sparsetune.attention.estimate_salient as S
    from sparsetune.attention.estimate_sampled import sampled_logits

    def estimate(q, k, budget, scale):
        bs, group = budget.block_size, q.shape[1] // k.shape[1]
        seq_q, seq_k = q.shape[2], k.shape[2]
        pos = torch.arange(seq_k - seq_q, seq_k)
        out = None
        for g in range(group):
            offset = (15 - g * 16 // group) % 16
            idx = ((pos % 16 == offset) | (pos == seq_k - 1)).nonzero().squeeze(1)
            qg = q[:, g::group]  # the g-th head of every KV head's group
            if salient:
                rows = []
                for b in range(q.shape[0]):
                    # The product's choice (from every head): keep its fully scored blocks, rotate the rest.
                    chosen = S.salient_positions(q[b:b + 1], k[b:b + 1], bs, scale, 16, budget.sink)
                    block, size = (chosen + seq_k - seq_q) // bs, torch.bincount(pos // bs)
                    full = torch.bincount(block, minlength=len(size))[block] == size[block]
                    rows.append(sampled_logits(qg[b:b + 1], k[b:b + 1], bs, scale, 16, "max",
                                               torch.unique(torch.cat([chosen[full], idx]))))
                logits = torch.cat(rows)
            else:
                logits = sampled_logits(qg, k, bs, scale, 16, "max", idx)
            out = logits if out is None else torch.maximum(out, logits)
        return out
    return estimate


def _shared(every: int, layers: int):
    """`sharepeakN`: exact per-query masses in every N-th layer, reused (max with their own peak/16) by the next."""
    from sparsetune.attention.estimate_sampled import sampled_logits

    calls, kept = [0], {}

    def estimate(q, k, budget, scale):
        layer = calls[0] % layers
        calls[0] += 1
        own = sampled_logits(q, k, budget.block_size, scale, 16, "max")
        if layer % every == 0 or own.shape not in kept:
            kept[own.shape] = sampled_logits(q, k, budget.block_size, scale, 1, "max")
            return kept[own.shape]
        return own.maximum(kept[own.shape])
    return estimate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--workload", required=True)
    ap.add_argument("--variant", required=True,
                    help="peak1, lowrank4/8/16, questq, meank, qdev4, qmix2, salientM[tT][sS], salientcolM, peakcolM, "
                         "peakrot, salientrot, windowA:B, sharepeak4/8, oracle, stock (peak/16), dense")
    ap.add_argument("--layers", default=None, help="A-B: the variant in layers A..B-1 only, peak/16 elsewhere")
    ap.add_argument("--budget", default="keep=0.256,block=64,sink=1,local=1,estimator=peak,stride=16")
    ap.add_argument("--out", default=str(OUT / "estimator_probe_smollm2.jsonl"))
    args = ap.parse_args()

    import torch

    import sparsetune.attention.estimate as E
    from sparsetune.attention.estimate_sampled import sampled_logits
    from sparsetune.evaluate.decode import evaluate
    from sparsetune.evaluate.inputs import load_inputs
    from sparsetune.profile.budget import Budget

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    v = args.variant
    if v == "peak1":
        variant = lambda q, k, b, s: sampled_logits(q, k, b.block_size, s, 1, "max")  # noqa: E731
    elif v.startswith("lowrank"):
        variant = _lowrank(int(v.removeprefix("lowrank")))
    elif v in ("questq", "meank"):
        variant = _per_query(v)
    elif v.startswith("qdev"):
        variant = _atypical(int(v.removeprefix("qdev")), None)
    elif v.startswith("qmix"):
        variant = _atypical(int(v.removeprefix("qmix")), 32)
    elif v in ("peakrot", "salientrot"):
        variant = _rotated(v == "salientrot")
    elif v.startswith(("salientcol", "peakcol")):
        base = "salient" if v.startswith("salientcol") else "peak"
        variant = _columns(int(v.removeprefix(base + "col")), base)
    elif v.startswith("salient"):
        m = re.fullmatch(r"salient(\d+)(?:t(\d+))?(?:s(\d+))?", v)
        if m is None:
            sys.exit(f"--variant: expected salientM[tT][sS], got {v!r}")
        variant = _salient(int(m[1]), int(m[2]) if m[2] else None, int(m[3] or 16))
    elif v.startswith("window"):
        variant = _window(*(tuple(int(x) for x in r.split(":")) for r in v.removeprefix("window").split(",")))
    elif v == "oracle":
        variant = E.ESTIMATE["oracle"]
    elif v in ("stock", "dense"):
        variant = E.ESTIMATE["peak"]
    elif not v.startswith("sharepeak"):
        sys.exit(f"--variant: unknown {v!r}")
    loaded, work = load_inputs(args.model, args.workload, threads=1)
    layers = loaded.model.config.num_hidden_layers
    if v.startswith("sharepeak"):
        variant = _shared(int(v.removeprefix("sharepeak")), layers)
    lo, hi = (int(x) for x in args.layers.split("-")) if args.layers else (0, layers)
    stock, calls = E.ESTIMATE["peak"], [0]

    def probe(q, k, b, scale):
        layer = calls[0] % layers
        calls[0] += 1
        return (variant if lo <= layer < hi else stock)(q, k, b, scale)

    E.ESTIMATE["peak"] = probe
    budget = Budget.parse(args.budget)
    started = time.perf_counter()
    r = evaluate(loaded, work.samples, None if v == "dense" else budget, batch_size=1)
    row = {"workload": args.workload, "lines": [s.line for s in work.samples], "variant": v,
           "layers": f"{lo}-{hi}", "budget": args.budget, "correct": r.correct, "sparsity": round(r.sparsity, 4),
           "seconds": round(time.perf_counter() - started, 1), "machine": "2 CPU cores, one thread",
           "command": "benchmarks/estimator_probe.py " + " ".join(sys.argv[1:])}
    print(json.dumps(row), flush=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
