"""CPU evaluation speed on a real model, as ratios measured in one run (issue: fast CPU evaluation).

    .venv/bin/python benchmarks/cpu_eval.py [--model smollm2] [--lengths 2048] [--reps 3] [--samples 8]
        [--estimator pooled] [--keeps 0.05,0.1,...] [--blocks 64,128]

1. Prefill: one forward of a random prompt with ``logits_to_keep=1``, plain transformers (SDPA) against
   the same model under `sparsetune.enable` with fixed budgets over a keep grid. Reported per budget as
   sparse / dense, the median of `reps` interleaved repetitions (each repetition runs every budget once,
   so load drifts hit all of them alike).
2. Dense evaluation: `sparsetune.evaluate.decode.evaluate(policy=None)` of synthetic samples (the text
   tasks at the given length, batched as the library batches them) against a plain transformers loop per
   sample: a prefill with ``logits_to_keep=1`` and a cache, then one decode step per further answer token.
   Reported as seconds per sample, evaluation / plain.

Writes benchmarks/out/cpu_eval_<model>.json (cpu_eval_<model>_<estimator>.json for another estimator than
pooled; `--samples 0` skips part 2).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sparsetune import Budget
from sparsetune.evaluate.decode import _cache_kwarg, evaluate
from sparsetune.runtime.hf_attention import disable, enable
from sparsetune.workload.files import TokenSample, synth_workload
from sparsetune.workload.models import load_model

OUT = Path(__file__).resolve().parent / "out"
KEEPS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.97)
BLOCKS = (64, 128)


def _spec(budget: Budget) -> str:
    return budget.to_text()


@torch.inference_mode()
def _prefill(model, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(input_ids=ids, logits_to_keep=1, use_cache=False)
    return time.perf_counter() - start


def prefill_ratios(loaded, length: int, reps: int, budgets: list[Budget]) -> list[dict]:
    model = loaded.model
    ids = torch.randint(100, min(loaded.vocab_size, 20000), (1, length), generator=torch.Generator().manual_seed(length))
    times: dict[str, list[float]] = {"dense": []}
    _prefill(model, ids)  # warm-up
    for _ in range(reps):
        disable(model)
        model.set_attn_implementation("sdpa")
        times["dense"].append(_prefill(model, ids))
        for budget in budgets:
            enable(model, budget)
            times.setdefault(_spec(budget), []).append(_prefill(model, ids))
    disable(model)
    dense = statistics.median(times["dense"])
    rows = [{"length": length, "budget": "dense (transformers sdpa)", "seconds": dense, "ratio": 1.0}]
    for budget in budgets:
        t = statistics.median(times[_spec(budget)])
        rows.append({"length": length, "budget": _spec(budget), "seconds": t, "ratio": t / dense})
    return rows


@torch.inference_mode()
def _plain(model, sample: TokenSample) -> float:
    """A plain transformers prefill + the answer's further tokens, one decode step each (teacher-forced)."""
    from transformers import DynamicCache

    start = time.perf_counter()
    cache = DynamicCache(config=model.config)
    kw = {_cache_kwarg(model): cache, "use_cache": True, "logits_to_keep": 1}
    model(input_ids=torch.tensor([sample.input_ids]), **kw)
    for token in (sample.answer_ids or [])[:-1]:
        model(input_ids=torch.tensor([[token]]), **kw)
    return time.perf_counter() - start


def eval_ratio(loaded, length: int, n: int) -> dict:
    tok = loaded.tokenizer
    rows = synth_workload(tok, ["niah", "multikey", "mv", "vt"], [length], max(1, n // 4), seed=7, style="text")
    samples = [TokenSample(input_ids=tok(r["prompt"])["input_ids"],
                           answer_ids=tok(r["answer"], add_special_tokens=False)["input_ids"], task=r["task"], line=i + 1)
               for i, r in enumerate(rows)]
    model = loaded.model
    model.set_attn_implementation("sdpa")
    plain = sum(_plain(model, s) for s in samples)
    result = evaluate(loaded, samples, None)
    disable(model)
    return {"length": length, "samples": len(samples), "answer_tokens": sum(len(s.answer_ids) for s in samples),
            "plain_s_per_sample": plain / len(samples), "eval_s_per_sample": result.seconds / len(samples),
            "ratio": result.seconds / plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--lengths", default="2048")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--estimator", default="pooled")
    ap.add_argument("--keeps", default=",".join(map(str, KEEPS)))
    ap.add_argument("--blocks", default=",".join(map(str, BLOCKS)))
    args = ap.parse_args()
    budgets = [Budget(keep=float(k), block_size=int(b), estimator=args.estimator)
               for b in args.blocks.split(",") for k in args.keeps.split(",")]
    loaded = load_model(args.model)
    loaded.model.eval()
    lengths = [int(x) for x in args.lengths.split(",")]
    prefill, evals = [], []
    for length in lengths:
        prefill += prefill_ratios(loaded, length, args.reps, budgets)
        for r in prefill[-len(budgets) - 1:]:
            print(f"prefill {r['length']:>5} {r['budget']:<40} {r['seconds']:7.3f} s  {r['ratio']:.3f}x", flush=True)
        if args.samples:
            evals.append(eval_ratio(loaded, length, args.samples))
            e = evals[-1]
            print(f"dense eval {length}: {e['eval_s_per_sample']:.3f} s/sample vs plain {e['plain_s_per_sample']:.3f} "
                  f"-> {e['ratio']:.3f}x", flush=True)
    out = {"model": args.model, "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                                          f"torch {torch.__version__}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": args.reps,
           "prefill": prefill, "dense_eval": evals,
           "worst_sparse_prefill_ratio": max(r["ratio"] for r in prefill[1:] if r["budget"].startswith("keep")),
           "worst_dense_eval_ratio": max((e["ratio"] for e in evals), default=None),
           "command": "benchmarks/cpu_eval.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())}
    OUT.mkdir(exist_ok=True)
    suffix = "" if args.estimator == "pooled" else f"_{args.estimator}"
    path = OUT / f"cpu_eval_{args.model}{suffix}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"worst sparse/dense prefill {out['worst_sparse_prefill_ratio']:.3f}x, "
          f"worst dense eval / plain {out['worst_dense_eval_ratio']}; wrote {path}")


if __name__ == "__main__":
    main()
