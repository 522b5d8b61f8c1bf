"""Shared pieces of the benchmark scripts: the grid, cached evaluation, the cost of a policy, policies, reports.

Every accuracy here is teacher-forced exact match (`sparsetune.evaluate.evaluate`), every cost is the
FLOP cost model (`sparsetune.timing.cost_model`, label ``cost-model``): no GPU time is measured.

Evaluations are cached on disk (``benchmarks/out/cache/``, one JSONL file per model and workload),
per length bucket, per chunk of 8 samples and per *behaviour*: the key is what the policy returns at
every KV length the bucket's samples reach, so a profile, a fixed budget and a token budget that pick
the same budget for a bucket share one evaluation. A rerun with a warm cache evaluates nothing.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CACHE = OUT / "cache"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
README = ROOT / "README.md"

EDGES = (256, 512, 1024, 2048)  # the demo workloads' lengths: one bucket each
FLOOR = 0.95  # relative floor: sparse accuracy >= FLOOR x dense accuracy, per bucket (point estimate, as search)
CONFIDENCE = 0.9  # for the paired lower bounds we report next to the point estimates

# The discrete space the exhaustive grid covers and both samplers search (search.py's SearchSpace,
# with keep discretised on a roughly log-spaced grid).
KEEPS = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05, 0.03)
BLOCKS = (32, 64, 128)
SINKS = (0, 1, 2)
LOCALS = (1, 2)
SLICE = {"block_size": 64, "sink": 1, "local": 1}  # the tolerance map's fixed block size, sink and local
TOKENS = (64, 96, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1536)  # fixed token budgets tried
GATES = (256, 512, 1024)  # dense-below-threshold gates tried for the gated fixed-ratio baseline
CHUNK = 8  # samples per evaluation chunk (one batch); the floor check stops between chunks

SPLITS = {"search": "demo", "heldout": str(ROOT / "sparsetune" / "demo" / "heldout.jsonl")}


# ---------------------------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Fixed:
    """One budget at every length; keep 1 is dense."""

    block_size: int
    keep: float
    sink: int
    local: int

    def lookup(self, seq_len: int):
        from sparsetune.profile.budget import Budget

        if self.keep >= 1.0:
            return None
        return Budget(method="topk", block_size=self.block_size, keep=self.keep, sink=self.sink, local=self.local)

    @property
    def label(self) -> str:
        if self.keep >= 1.0:
            return "dense"
        return f"keep={self.keep:g},block={self.block_size},sink={self.sink},local={self.local}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed-keep", "keep": self.keep, "block_size": self.block_size, "sink": self.sink,
                "local": self.local, "label": self.label}


@dataclass(frozen=True)
class Tokens:
    """A fixed token budget (Quest / MInference style): about `tokens` keys per query at every length.

    keep = tokens / kv_len, so the last query row keeps ceil(tokens / block_size) blocks, sink and local
    included; dense where tokens >= kv_len.
    """

    tokens: int
    block_size: int
    sink: int
    local: int

    def lookup(self, seq_len: int):
        from sparsetune.profile.budget import Budget

        keep = self.tokens / seq_len
        if keep >= 1.0:
            return None
        return Budget(method="topk", block_size=self.block_size, keep=keep, sink=self.sink, local=self.local)

    @property
    def label(self) -> str:
        return f"tokens={self.tokens},block={self.block_size},sink={self.sink},local={self.local}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed-tokens", "tokens": self.tokens, "block_size": self.block_size, "sink": self.sink,
                "local": self.local, "label": self.label}


@dataclass(frozen=True)
class Gated:
    """Dense up to `gate` tokens, one fixed budget above (the serving engines' dense-below-threshold gate)."""

    gate: int
    inner: Fixed

    def lookup(self, seq_len: int):
        return None if seq_len <= self.gate else self.inner.lookup(seq_len)

    @property
    def label(self) -> str:
        return f"dense <= {self.gate}, then {self.inner.label}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gated-fixed-keep", "gate": self.gate, "inner": self.inner.to_dict(), "label": self.label}


@dataclass(frozen=True)
class PerBucket:
    """One budget per bucket of `edges` (inputs beyond the last edge use the last budget); no dense floor."""

    edges: tuple[int, ...]
    budgets: tuple[Fixed, ...]

    def lookup(self, seq_len: int):
        i = min(bisect.bisect_left(self.edges, seq_len), len(self.edges) - 1)
        return self.budgets[i].lookup(seq_len)

    @property
    def label(self) -> str:
        return "; ".join(f"<={e}: {b.label}" for e, b in zip(self.edges, self.budgets))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "per-bucket", "buckets": [{"max_len": e, **b.to_dict()} for e, b in zip(self.edges, self.budgets)],
                "label": self.label}


class ProfilePolicy:
    """A sparsetune profile as serving uses it: `Profile.lookup(kv_len)`, min_len and dense buckets included."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import sparsetune

        self.path = Path(path)
        self.profile = sparsetune.load_profile(self.path)

    def lookup(self, seq_len: int):
        return self.profile.lookup(seq_len)

    @property
    def label(self) -> str:
        parts = []
        for i, b in enumerate(self.profile.buckets):
            first, last = self.profile.bucket_range(i)
            if b.dense or b.budget is None:
                parts.append(f"{first}-{last}: dense")
            else:
                g = b.budget
                parts.append(f"{first}-{last}: keep={g.keep:.3g},block={g.block_size},sink={g.sink},local={g.local}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        try:
            shown = str(self.path.resolve().relative_to(ROOT))
        except ValueError:
            shown = str(self.path)
        buckets = []
        for i, b in enumerate(self.profile.buckets):
            first, last = self.profile.bucket_range(i)
            buckets.append({"min_len": first, "max_len": last, "dense": bool(b.dense or b.budget is None),
                            "budget": None if b.budget is None else b.budget.to_dict(),
                            "search_accuracy": None if b.accuracy is None else
                            {"sparse": b.accuracy.sparse, "dense": b.accuracy.dense, "n": b.accuracy.n}})
        prov = self.profile.provenance
        return {"kind": "profile", "path": shown, "sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
                "trials_per_bucket": prov.trials_per_bucket, "seed": prov.seed,
                "floor": {"kind": self.profile.floor.kind, "value": self.profile.floor.value,
                          "confidence": self.profile.floor.confidence},
                "min_len": self.profile.min_len, "buckets": buckets, "label": self.label}


def grid_points() -> list[Fixed]:
    """Every (block, keep, sink, local) of the grid; keep 1 is dense whatever the rest, so it appears once."""
    pts = [Fixed(64, 1.0, 0, 1)]
    pts += [Fixed(b, k, s, l) for b in BLOCKS for k in KEEPS if k < 1.0 for s in SINKS for l in LOCALS]
    return pts


# ---------------------------------------------------------------------------------------------- cost


@functools.lru_cache(maxsize=None)
def _density(seq_len: int, budget_json: str, heads: int, kv_heads: int, head_dim: int) -> float:
    """Kept / visible key blocks of the prefill mask at `seq_len`: topk counts do not depend on content."""
    import torch

    from sparsetune.attention import select_blocks
    from sparsetune.profile.budget import Budget

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, seq_len, head_dim, generator=gen)
    k = torch.randn(1, kv_heads, seq_len, head_dim, generator=gen)
    return select_blocks(q, k, Budget(**json.loads(budget_json))).density


def relative_cost(policy: Any, seq_len: int, heads: int, kv_heads: int, head_dim: int) -> float:
    """Attention cost of the prefill at `seq_len` under `policy`, relative to dense (cost model, selection included)."""
    from sparsetune.timing import cost_model

    budget = None if policy is None else policy.lookup(seq_len)
    if budget is None or budget.is_dense:
        return 1.0
    density = _density(seq_len, json.dumps(budget.to_dict(), sort_keys=True), heads, kv_heads, head_dim)
    return cost_model(seq_len, budget.block_size, density, head_dim, heads, kv_heads).relative


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class BucketResult:
    """A policy on one bucket: per-sample correctness (None = not evaluated: the floor was out of reach)."""

    edge: int
    tasks: list[str]
    correct: list[bool | None]
    dense: list[bool] | None  # per-sample dense correctness (None for the dense result itself)
    cost: float  # relative attention cost over the bucket's samples (FLOP-weighted)
    measured_sparsity: float  # from the evaluated chunks' attention stats (skipped / visible, sparse calls)
    seconds: float

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def complete(self) -> bool:
        return all(c is not None for c in self.correct)

    @property
    def right(self) -> int:
        return sum(1 for c in self.correct if c)

    @property
    def accuracy(self) -> float:
        return self.right / self.n

    @property
    def best_case(self) -> float:
        """Accuracy if every unevaluated sample were right (what search.py compares with the floor)."""
        return sum(1 for c in self.correct if c is not False) / self.n

    def target(self) -> float:
        dense = self.dense if self.dense is not None else [bool(c) for c in self.correct]
        return FLOOR * sum(dense) / len(dense)

    @property
    def dense_accuracy(self) -> float:
        dense = self.dense if self.dense is not None else [bool(c) for c in self.correct]
        return sum(dense) / len(dense)

    @property
    def feasible(self) -> bool:
        return self.complete and self.accuracy >= self.target() - 1e-12

    def per_task(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        dense = self.dense if self.dense is not None else self.correct
        for task in sorted(set(self.tasks)):
            idx = [i for i, t in enumerate(self.tasks) if t == task]
            out[task] = {"n": len(idx), "sparse": sum(1 for i in idx if self.correct[i]),
                         "dense": sum(1 for i in idx if dense[i]),
                         "complete": all(self.correct[i] is not None for i in idx)}
        return out

    def lower_bound(self) -> float | None:
        """Paired lower confidence bound of the sparse accuracy (complete results only)."""
        if not self.complete:
            return None
        from sparsetune.stats import paired_lower_bound

        dense = self.dense if self.dense is not None else [bool(c) for c in self.correct]
        return max(0.0, paired_lower_bound(dense, [bool(c) for c in self.correct], CONFIDENCE).sparse_lower_bound)


    def upper_bound(self) -> float | None:
        """Paired upper confidence bound of the sparse accuracy: dense accuracy minus the lower bound of
        (dense - sparse). A floor above it is missed beyond noise at CONFIDENCE."""
        if not self.complete:
            return None
        from sparsetune.stats import paired_lower_bound

        dense = self.dense if self.dense is not None else [bool(c) for c in self.correct]
        sparse = [bool(c) for c in self.correct]
        # roles swapped: bounds (dense - sparse) from below; its "sparse_accuracy" is the dense one
        worse = paired_lower_bound(sparse, dense, CONFIDENCE)
        return min(1.0, worse.sparse_accuracy - worse.lower_bound)


class Bench:
    """A model on one split of the demo workload, bucketed at EDGES, with an on-disk evaluation cache."""

    def __init__(self, model: str, split: str, cache_dir: Path = CACHE) -> None:
        from sparsetune.evaluate import load_inputs
        from sparsetune.profile.buckets import bucketize

        self.model_arg, self.split = model, split
        self.loaded, self.work = load_inputs(model, SPLITS[split])
        samples = self.work.samples
        groups = bucketize(samples, EDGES)
        if sum(map(len, groups)) != len(samples) or any(not g for g in groups):
            raise SystemExit(f"{split}: expected every sample in one of the buckets {EDGES}")
        self.groups = groups
        m = self.loaded
        self.shape = (m.heads, m.kv_heads, m.head_dim)
        self.model_id = hashlib.sha256(f"{m.config_sha256}:{m.weights_id}".encode()).hexdigest()[:16]
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_path = cache_dir / f"evals-{self.model_id}-{self.work.sha256[:16]}.jsonl"
        self._records: dict[tuple[int, str], dict[int, dict[str, Any]]] = {}
        if self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run
                self._records.setdefault((r["edge"], r["key"]), {})[r["chunk"]] = r
        self._rejections: dict[int, int] = {}  # bucket -> candidates it rejected (feasible_everywhere's order)
        self.evaluations = 0  # chunks evaluated by this process (not from the cache)
        self.eval_seconds = 0.0

    # ------------------------------------------------------------------ keys and chunks
    def chunks(self, b: int) -> list[list[int]]:
        n = len(self.groups[b])
        return [list(range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK)]

    def key(self, b: int, policy: Any) -> str:
        """What the policy does on bucket b: its budget at every KV length the bucket's forwards see."""
        if policy is None:
            return "dense"
        seen: dict[int, Any] = {}
        for idx in self.chunks(b):
            part = [self.groups[b][i] for i in idx]
            width = max(len(s.input_ids) for s in part)  # left padding: the batch's KV length
            steps = max(len(s.answer_ids or ()) for s in part)
            for j in range(steps):
                budget = policy.lookup(width + j)
                seen[width + j] = None if budget is None or budget.is_dense else budget.to_dict()
        if all(v is None for v in seen.values()):
            return "dense"
        return json.dumps(sorted(seen.items()), sort_keys=True)

    # ------------------------------------------------------------------ evaluation
    def cost(self, b: int, policy: Any) -> float:
        """FLOP-weighted relative attention cost of the bucket's prefills under `policy`."""
        from sparsetune.timing import attention_flops

        h, kv, d = self.shape
        num = den = 0.0
        for s in self.groups[b]:
            L = len(s.input_ids)
            w = attention_flops(L, d, h)
            num += w * relative_cost(policy, L, h, kv, d)
            den += w
        return num / den

    def sparsity(self, b: int, policy: Any) -> float:
        """FLOP-weighted prefill sparsity (skipped / visible key blocks) of the bucket under `policy`."""
        from sparsetune.timing import attention_flops

        h, kv, d = self.shape
        num = den = 0.0
        for s in self.groups[b]:
            L = len(s.input_ids)
            budget = None if policy is None else policy.lookup(L)
            dens = 1.0 if budget is None or budget.is_dense else _density(
                L, json.dumps(budget.to_dict(), sort_keys=True), h, kv, d)
            w = attention_flops(L, d, h)
            num += w * (1.0 - dens)
            den += w
        return num / den

    def dense_flops(self, b: int) -> float:
        from sparsetune.timing import attention_flops

        h, _, d = self.shape
        return sum(attention_flops(len(s.input_ids), d, h) for s in self.groups[b])

    def workload_cost(self, policy: Any) -> float:
        """Relative attention cost over the whole split's length mix (dense-equivalent FLOPs / dense FLOPs)."""
        w = [self.dense_flops(b) for b in range(len(EDGES))]
        return sum(wb * self.cost(b, policy) for b, wb in enumerate(w)) / sum(w)

    def result(self, b: int, policy: Any, mode: str = "full") -> BucketResult:
        """Evaluate `policy` on bucket b: ``full`` evaluates every chunk; ``floor`` stops once the floor
        is out of reach (the early stop of search.py), so infeasible points cost a chunk or two."""
        from sparsetune.evaluate import evaluate

        if mode not in ("full", "floor"):
            raise ValueError(mode)
        key = self.key(b, policy)
        edge = EDGES[b]
        group = self.groups[b]
        recs = self._records.setdefault((edge, key), {})
        dense = None if key == "dense" else [bool(c) for c in self.result(b, None).correct]
        target = None if dense is None else FLOOR * sum(dense) / len(dense)
        run_policy = None if key == "dense" else policy
        for ci, idx in enumerate(self.chunks(b)):
            if ci in recs:
                continue
            if mode == "floor" and target is not None:
                best = (len(group) - sum(1 for r in recs.values() for c in r["correct"] if not c)) / len(group)
                if best < target - 1e-12:
                    break
            part = [group[i] for i in idx]
            r = evaluate(self.loaded, part, run_policy)
            rec = {"edge": edge, "key": key, "chunk": ci, "correct": [bool(c) for c in r.correct],
                   "visible": r.stats.visible_blocks, "skipped": r.stats.skipped_blocks,
                   "sparse_calls": r.stats.sparse_calls, "dense_calls": r.stats.dense_calls,
                   "seconds": round(r.seconds, 4)}
            recs[ci] = rec
            self.evaluations += 1
            self.eval_seconds += r.seconds
            with self.cache_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        correct: list[bool | None] = [None] * len(group)
        visible = skipped = seconds = 0.0
        for ci, idx in enumerate(self.chunks(b)):
            r = recs.get(ci)
            if r is None:
                continue
            for i, c in zip(idx, r["correct"]):
                correct[i] = c
            visible += r["visible"]
            skipped += r["skipped"]
            seconds += r["seconds"]
        return BucketResult(edge=edge, tasks=[s.task for s in group], correct=correct, dense=dense,
                            cost=self.cost(b, policy), measured_sparsity=skipped / visible if visible else 0.0,
                            seconds=seconds)

    def feasible_everywhere(self, policy: Any, mode: str = "floor") -> bool:
        """The floor in every bucket, stopping at the first miss. Buckets that rejected the most candidates so
        far go first (then the shorter, cheaper ones): the answer is the same in any order, the work is not."""
        order = sorted(range(len(EDGES)), key=lambda b: (-self._rejections.get(b, 0), b))
        for b in order:
            if not self.result(b, policy, mode).feasible:
                self._rejections[b] = self._rejections.get(b, 0) + 1
                return False
        return True

    def cheapest_feasible(self, candidates: Iterable[Any], bucket: int | None = None) -> tuple[Any, int]:
        """The cheapest candidate that meets the floor (in `bucket`, or in every bucket), and how many
        candidates were checked. Candidates are sorted by cost (known without evaluating), so the first
        feasible one in that order is the best: no exhaustive evaluation needed."""
        cands = list(candidates)
        if bucket is None:
            costs = {id(c): self.workload_cost(c) for c in cands}
        else:
            costs = {id(c): self.cost(bucket, c) for c in cands}
        order = sorted(cands, key=lambda c: (round(costs[id(c)], 12), c.label))
        for checked, c in enumerate(order, 1):
            ok = self.result(bucket, c, "floor").feasible if bucket is not None else self.feasible_everywhere(c)
            if ok:
                return c, checked
        raise RuntimeError("no candidate met the floor (dense should always be among them)")


# ---------------------------------------------------------------------------------------------- provenance


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    where = f"GPU {gpu}" if gpu else "no GPU: costs from the FLOP cost model, no measured GPU time"
    return f"{cores} CPU cores ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads; {where}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def meta(started: float, command: str | None = None) -> dict[str, Any]:
    if command is None:
        script = Path(sys.argv[0]).resolve()
        try:
            script_s = str(script.relative_to(ROOT))
        except ValueError:
            script_s = str(script)
        command = shlex.join([".venv/bin/python", script_s, *sys.argv[1:]])
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "command": command, "commit": git_commit(),
            "wall_s": round(time.time() - started, 1)}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def model_label(model: str) -> str:
    return "demo" if model == "demo" else Path(model).name


# ---------------------------------------------------------------------------------------------- markdown


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write and close a matplotlib figure (every benchmark plot is saved the same way)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def splice(path: Path, name: str, body: str, header: str = "# Benchmark results\n", before: str | None = None) -> None:
    """Replace (or append) the block between this section's markers, re-reading the file first so
    sections other people write are left exactly as they are."""
    begin, end = f"<!-- bench:{name} begin (written by benchmarks/report.py) -->", f"<!-- bench:{name} end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.is_file() else header
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    elif before is not None and f"\n{before}" in text:  # first time: insert above this heading
        head, tail = text.split(f"\n{before}", 1)
        text = head.rstrip("\n") + "\n\n" + block + "\n\n" + before + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
