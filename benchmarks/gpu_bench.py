#!/usr/bin/env python
"""Block-sparse attention on one CUDA GPU: correctness first, then speed against flex_attention and SDPA.

Run through ``benchmarks/gpu.sh`` (it installs nothing from the network). Stages:

1. Correctness: our kernel vs the torch reference vs ``flex_attention`` given the same block
   mask, on CUDA, bf16 and fp16, head_dim 128 (and 64), GQA, a chunk (Sq < Sk) and decode.
2. Speed: L x keep (default {4k, 16k, 64k} x {1.0, 0.5, 0.2, 0.1, 0.05}), prefill, batch 1,
   32 query / 8 KV heads, head_dim 128, bf16 (a Llama-3-8B layer). Columns: our kernel at its
   best launch config (a pruned set is timed), compiled ``flex_attention`` with the same mask,
   dense SDPA (flash), selection time, achieved TFLOP/s and speed-ups.

Every case is caught and time-boxed; results are written after each case to
``<out>/results.json`` and ``<out>/results.md`` (``--out`` or ``$OUT``), so a timeout still
leaves a table. ``--smoke`` runs tiny shapes (on CPU: the Triton interpreter, no timing) to
check the plumbing without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def _ensure_package() -> None:
    """Import sparsetune and sparsetune.kernels, from the checkout if it is not installed."""
    try:
        import sparsetune.kernels  # noqa: F401
        return
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT))
    # `kernels/` is `sparsetune.kernels` through the symlink sparsetune/kernels (a namespace package: no
    # __init__.py), so the checkout on sys.path is all it takes.
    import sparsetune.kernels  # noqa: F401,F811


class CaseTimeout(Exception):
    pass


class Bench:
    """Collects results, enforces the time budget, writes after every case."""

    def __init__(self, out: Path, budget_s: float, case_s: int) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.case_s = case_s
        self.results: dict[str, Any] = {"env": {}, "correctness": [], "table": [], "errors": []}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, fn: Callable[[], Any], limit_s: int | None = None) -> Any:
        """Run one case under an alarm; record and swallow any failure."""
        limit = int(min(limit_s or self.case_s, max(self.left(), 1)))
        if self.left() <= 5:
            self.results["errors"].append({"case": name, "error": "skipped: time budget spent"})
            print(f"  skip {name}: time budget spent", flush=True)
            return None

        def on_alarm(signum: int, frame: Any) -> None:
            raise CaseTimeout(f"{name}: over {limit} s")

        use_alarm = hasattr(signal, "SIGALRM")
        if use_alarm:
            signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(limit)
        start = time.monotonic()
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed case must not end the run
            self.results["errors"].append({"case": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                                           "traceback": traceback.format_exc()[-2000:]})
            print(f"  FAIL {name}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            return None
        finally:
            if use_alarm:
                signal.alarm(0)
            print(f"  ({name}: {time.monotonic() - start:.1f} s, {self.left():.0f} s left)", flush=True)
            self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "results.md").write_text(markdown(self.results))


# ---- correctness -----------------------------------------------------------------------------

TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def correctness_case(torch: Any, device: str, dtype: Any, shape: tuple, budget: Any, configs: list) -> dict:
    from sparsetune.attention import flex_reference_attention, reference_attention, select_blocks
    from sparsetune.kernels.block_sparse_attn import block_sparse_attn_fwd

    b, hq, hkv, sq, sk, d = shape
    g = torch.Generator(device="cpu").manual_seed(sum(shape))
    q = torch.randn(b, hq, sk, d, generator=g)[:, :, sk - sq:].to(device, dtype)
    k = torch.randn(b, hkv, sk, d, generator=g).to(device, dtype)
    v = torch.randn(b, hkv, sk, d, generator=g).to(device, dtype)
    mask = select_blocks(q, k, budget).validate()
    f32 = [t.float() for t in (q, k, v)]
    ref = reference_attention(*f32, mask)
    scale = ref.abs().max().item()
    flex = flex_reference_attention(*f32, mask)
    row = {"shape": dict(zip(("B", "Hq", "Hkv", "Sq", "Sk", "D"), shape)), "dtype": str(dtype).removeprefix("torch."),
           "budget": budget.to_dict(), "sparsity": round(mask.sparsity, 4),
           "flex_vs_ref": (flex.float() - ref).abs().max().item() / scale, "kernel": []}
    tol = TOL[row["dtype"]]
    ok = row["flex_vs_ref"] <= 1e-4
    for conf in configs:
        out = torch.full_like(q, float("nan"))  # poisoned: unwritten elements show up as NaN
        block_sparse_attn_fwd(q, k, v, mask.kv_num_blocks, mask.kv_indices, mask.block_size, config=conf, out=out)
        nan = int(torch.isnan(out).sum())
        err = (out.float() - ref).abs().max().item() / scale
        good = nan == 0 and err <= tol
        ok &= good
        row["kernel"].append({"config": conf, "rel_err": err, "nan": nan, "ok": good})
    row["ok"] = ok
    return row


def stage_correctness(bench: Bench, torch: Any, device: str, smoke: bool) -> None:
    from sparsetune import Budget
    from sparsetune.kernels.configs import QUICK_CONFIGS, default_config, keep_config

    print("== correctness", flush=True)
    if smoke:
        dtypes = [torch.float32, torch.float16] if device == "cpu" else [torch.bfloat16, torch.float16]
        cases = [((1, 4, 1, 40, 40, 16), Budget(block_size=16, keep=0.4)),
                 ((1, 2, 2, 1, 50, 16), Budget(method="coverage", block_size=16, tau=0.7))]
    else:
        dtypes = [torch.bfloat16, torch.float16]
        cases = [((2, 8, 2, 1000, 1000, 128), Budget(block_size=64, keep=0.3)),  # GQA 4:1, ragged
                 ((1, 8, 4, 300, 1100, 128), Budget(method="coverage", block_size=64, tau=0.9)),  # chunk, 2:1
                 ((2, 8, 1, 1, 2049, 128), Budget(block_size=64, keep=0.2)),  # decode
                 ((1, 16, 8, 1500, 1500, 128), Budget(block_size=128, keep=0.25, sink=2, local=2)),
                 ((1, 4, 4, 777, 777, 64), Budget(block_size=128, keep=0.5))]
    for dtype in dtypes:
        for shape, budget in cases:
            bs = budget.block_size
            confs = [default_config(bs)] + [c for c in QUICK_CONFIGS if keep_config(c, bs, shape[-1])][:2]
            if smoke:
                confs = confs[:1]
            name = f"correct {str(dtype)[6:]} {shape} {budget.method} {budget.ratio}"
            row = bench.run(name, lambda: correctness_case(torch, device, dtype, shape, budget, confs), limit_s=120)
            if row is not None:
                bench.results["correctness"].append(row)
                worst = max(r["rel_err"] for r in row["kernel"])
                print(f"  {'ok ' if row['ok'] else 'BAD'} {name}: kernel err {worst:.2e}, "
                      f"flex err {row['flex_vs_ref']:.2e}", flush=True)


# ---- speed -----------------------------------------------------------------------------------

def stage_speed(bench: Bench, torch: Any, args: argparse.Namespace, device: str = "cuda") -> None:
    from sparsetune import Budget, timing
    from sparsetune.attention import select_blocks
    from sparsetune.kernels.configs import configs_for
    from sparsetune.kernels.block_sparse_attn import block_sparse_attn_fwd
    from sparsetune.timing import attention_flops, dense_sdpa_ms

    print("== speed", flush=True)
    from torch.nn.attention.flex_attention import flex_attention
    flex_compiled = torch.compile(flex_attention, dynamic=False)
    dtype = getattr(torch, args.dtype)
    heads, kv_heads, d, bs = args.heads, args.kv_heads, args.head_dim, args.block_size
    on_gpu = device == "cuda"

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    def bench_ms(fn: Callable[[], Any]) -> float:
        if not on_gpu:  # CPU smoke run: exercise the code, never time the interpreter
            fn()
            return math.nan
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median"))

    if not on_gpu:
        timing._bench = lambda fn, warmup, rep: bench_ms(fn)  # type: ignore[attr-defined]

    for L in args.lengths:
        torch.manual_seed(L)
        state: dict[str, Any] = {}

        def make_inputs() -> None:
            state["q"] = torch.randn(1, heads, L, d, device=device, dtype=dtype)
            state["k"] = torch.randn(1, kv_heads, L, d, device=device, dtype=dtype)
            state["v"] = torch.randn(1, kv_heads, L, d, device=device, dtype=dtype)
            state["out"] = torch.empty_like(state["q"])

        bench.run(f"inputs L={L}", make_inputs)
        if "out" not in state:
            continue
        q, k, v, out = state["q"], state["k"], state["v"], state["out"]
        dense = bench.run(f"dense L={L}", lambda: dense_sdpa_ms(q, k, v, args.warmup, args.rep))
        dense_ms, dense_how = dense if dense else (None, "failed")
        dense_flops = attention_flops(L, d, heads)
        for keep in args.keeps:
            budget = Budget(block_size=bs, keep=keep, sink=1, local=1)

            def case() -> dict:
                mask = select_blocks(q, k, budget)
                sync()
                row: dict[str, Any] = {"L": L, "keep": keep, "block_size": bs, "sparsity": mask.sparsity,
                                       "density": mask.density, "dense_ms": dense_ms, "dense_backend": dense_how}
                row["selection_ms"] = 0.0 if budget.is_dense else bench_ms(lambda: select_blocks(q, k, budget))
                timings = []
                for conf in configs_for(bs, d, quick=not args.full_sweep):
                    if bench.left() < 20:
                        break
                    def launch(conf: dict = conf) -> None:
                        block_sparse_attn_fwd(q, k, v, mask.kv_num_blocks, mask.kv_indices, bs, config=conf, out=out)
                    try:
                        launch()
                        sync()
                        timings.append({"config": conf, "ms": bench_ms(launch)})
                    except Exception as exc:  # noqa: BLE001 - a config may not compile on this card
                        timings.append({"config": conf, "ms": None, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                row["configs"] = timings
                ok = [t for t in timings if t["ms"] is not None and not math.isnan(t["ms"])] or \
                    [t for t in timings if t["ms"] is not None][:1]
                best = min(ok, key=lambda t: t["ms"]) if ok else None
                row["best_config"] = best["config"] if best else None
                row["ours_ms"] = best["ms"] if best else None
                try:
                    # Causal-only mask_mod: compiled flex skips unlisted blocks itself (fastest for it).
                    fmask = mask.to_flex(num_heads=heads, mask_mod_selects=False)
                    flex_fn = lambda: flex_compiled(q, k, v, block_mask=fmask, enable_gqa=True)  # noqa: E731
                    flex_out = flex_fn()
                    sync()
                    if best:  # the same mask at full length: our output should match flex's
                        block_sparse_attn_fwd(q, k, v, mask.kv_num_blocks, mask.kv_indices, bs,
                                              config=best["config"], out=out)
                        row["ours_vs_flex_rel_err"] = ((out.float() - flex_out.float()).abs().max()
                                                       / flex_out.float().abs().max()).item()
                    del flex_out
                    row["flex_ms"] = bench_ms(flex_fn)
                except Exception as exc:  # noqa: BLE001
                    row["flex_ms"] = None
                    row["flex_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                flops = dense_flops * mask.density
                if row["ours_ms"]:
                    row["ours_tflops"] = flops / row["ours_ms"] / 1e9
                    total = row["ours_ms"] + row["selection_ms"]
                    row["speedup_vs_dense"] = dense_ms / total if dense_ms else None
                    row["kernel_speedup_vs_dense"] = dense_ms / row["ours_ms"] if dense_ms else None
                    row["speedup_vs_flex"] = row["flex_ms"] / row["ours_ms"] if row["flex_ms"] else None
                    row["selection_share"] = row["selection_ms"] / row["ours_ms"]
                if row["flex_ms"]:
                    row["flex_tflops"] = flops / row["flex_ms"] / 1e9
                if dense_ms:
                    row["dense_tflops"] = dense_flops / dense_ms / 1e9
                return row

            row = bench.run(f"L={L} keep={keep}", case, limit_s=args.case_s)
            if row is not None:
                bench.results["table"].append(row)
                print(f"  L={L:>6} keep={keep:<5} ours={_fmt(row.get('ours_ms'))} ms "
                      f"flex={_fmt(row.get('flex_ms'))} ms dense={_fmt(dense_ms)} ms "
                      f"sel={_fmt(row.get('selection_ms'))} ms speedup={_fmt(row.get('speedup_vs_dense'), 2)}x",
                      flush=True)
        del q, k, v, out, state
        if on_gpu:
            torch.cuda.empty_cache()


# ---- report ----------------------------------------------------------------------------------

def _fmt(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _err(x: Any) -> str:
    return "-" if x is None else f"{x:.1e}"


def targets(table: list[dict]) -> list[str]:
    """The issue's four performance targets, checked against the table."""
    lines = []

    def rows(pred: Callable[[dict], bool]) -> list[dict]:
        return [r for r in table if pred(r) and r.get("ours_ms")]

    r = rows(lambda r: r["keep"] == 1.0 and r["L"] >= 16384)
    if r:
        worst = max(x["ours_ms"] / x["dense_ms"] for x in r if x.get("dense_ms"))
        lines.append(f"- keep=1.0 within 1.25x of dense at L>=16k: worst {worst:.2f}x -> {'PASS' if worst <= 1.25 else 'FAIL'}")
    r = rows(lambda r: r["keep"] == 0.1 and r["L"] == 65536)
    if r and r[0].get("speedup_vs_dense"):
        s = r[0]["speedup_vs_dense"]
        lines.append(f"- keep=0.1 >= 5x faster than dense at 64k (with selection): {s:.2f}x -> {'PASS' if s >= 5 else 'FAIL'}")
    r = [x for x in rows(lambda r: True) if x.get("flex_ms")]
    if r:
        worst = max(x["ours_ms"] / x["flex_ms"] for x in r)
        lines.append(f"- no slower than flex_attention (same mask): worst ours/flex {worst:.2f} -> {'PASS' if worst <= 1.0 else 'FAIL'}")
    r = rows(lambda r: r["L"] >= 16384 and r["keep"] < 1.0)
    if r:
        worst = max(x["selection_share"] for x in r)
        lines.append(f"- selection < 10% of kernel time at L>=16k: worst {worst:.1%} -> {'PASS' if worst < 0.1 else 'FAIL'}")
    return lines


def markdown(res: dict) -> str:
    env = res.get("env", {})
    out = [f"# Block-sparse attention on {env.get('device', '?')}", "",
           f"torch {env.get('torch')}, triton {env.get('triton')}, {env.get('dtype')}, "
           f"Hq={env.get('heads')}, Hkv={env.get('kv_heads')}, D={env.get('head_dim')}, "
           f"block {env.get('block_size')}, batch 1, prefill (Sq = Sk = L). Times are do_bench medians in ms.", ""]
    if res["correctness"]:
        bad = [c for c in res["correctness"] if not c["ok"]]
        out += [f"## Correctness: {len(res['correctness']) - len(bad)}/{len(res['correctness'])} cases pass", "",
                "| dtype | B,Hq,Hkv,Sq,Sk,D | budget | sparsity | kernel max rel err | flex rel err | ok |",
                "|---|---|---|---|---|---|---|"]
        for c in res["correctness"]:
            s = c["shape"]
            out.append(f"| {c['dtype']} | {s['B']},{s['Hq']},{s['Hkv']},{s['Sq']},{s['Sk']},{s['D']} | "
                       f"{c['budget']} | {c['sparsity']:.2f} | {max(k['rel_err'] for k in c['kernel']):.1e} | "
                       f"{c['flex_vs_ref']:.1e} | {'yes' if c['ok'] else '**NO**'} |")
        out.append("")
    if res["table"]:
        out += ["## Speed", "",
                "| L | keep | sparsity | ours ms | best config | flex ms | dense ms | selection ms | "
                "ours TFLOP/s | flex TFLOP/s | dense TFLOP/s | speed-up vs dense (incl. selection) | vs flex | "
                "ours vs flex rel err |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["table"]:
            c = r.get("best_config") or {}
            conf = f"{c.get('BLOCK_M')}x{c.get('BLOCK_N')} w{c.get('num_warps')} s{c.get('num_stages')}" if c else "-"
            out.append(f"| {r['L']} | {r['keep']} | {r['sparsity']:.2f} | {_fmt(r.get('ours_ms'))} | {conf} | "
                       f"{_fmt(r.get('flex_ms'))} | {_fmt(r.get('dense_ms'))} | {_fmt(r.get('selection_ms'))} | "
                       f"{_fmt(r.get('ours_tflops'), 0)} | {_fmt(r.get('flex_tflops'), 0)} | "
                       f"{_fmt(r.get('dense_tflops'), 0)} | {_fmt(r.get('speedup_vs_dense'), 2)} | "
                       f"{_fmt(r.get('speedup_vs_flex'), 2)} | {_err(r.get('ours_vs_flex_rel_err'))} |")
        out += ["", "TFLOP/s count 4*D FLOPs per kept query-key pair (density x L^2/2 pairs per head).", ""]
        t = targets(res["table"])
        if t:
            out += ["## Targets", ""] + t + [""]
    if res["errors"]:
        out += ["## Errors", ""] + [f"- {e['case']}: {e['error']}" for e in res["errors"]] + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_bench"),
                   help="results folder (default: $OUT, else runs/gpu_bench)")
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    p.add_argument("--keeps", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1, 0.05])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--block-size", type=int, default=128,
                   help="sparse block size; 128 lets BLOCK_M reach 128 (BLOCK_M must divide it)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--full-sweep", action="store_true", help="time every valid config, not the pruned set")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    p.add_argument("--rep", type=int, default=100, help="do_bench measuring time, ms")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting cases after this many seconds")
    p.add_argument("--case-s", type=int, default=150, help="time box per case, s (the first per length compiles flex)")
    p.add_argument("--skip-correctness", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny shapes; on CPU the Triton interpreter and no timing")
    args = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.smoke:
            print("gpu_bench: no CUDA device; use --smoke for a CPU plumbing check", file=sys.stderr)
            return 2
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported
    _ensure_package()
    import triton

    if args.smoke:  # tiny shapes; on CPU every time is NaN (the interpreter is never timed)
        args.lengths, args.keeps = ([1024], [1.0, 0.1]) if cuda else ([96], [1.0, 0.3])
        if not cuda:
            args.heads, args.kv_heads, args.head_dim, args.block_size, args.dtype = 4, 2, 16, 32, "float32"
    bench = Bench(Path(args.out), args.budget_s, args.case_s)
    bench.results["env"] = {
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}), interpreter",
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "dtype": args.dtype, "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
        "block_size": args.block_size, "args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"gpu_bench: {bench.results['env']['device']}; results -> {bench.out}", flush=True)
    try:
        if not args.skip_correctness:
            stage_correctness(bench, torch, "cuda" if cuda else "cpu", args.smoke)
        stage_speed(bench, torch, args, "cuda" if cuda else "cpu")
    except KeyboardInterrupt:
        bench.results["errors"].append({"case": "run", "error": "interrupted (timeout): partial results"})
    bench.results["env"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    bench.save()
    print(markdown(bench.results), flush=True)
    bad = [c for c in bench.results["correctness"] if not c["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
