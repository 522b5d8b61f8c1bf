"""Policies judged bucket by bucket against a floor, with a cached, chunked evaluation: the engine of
the benchmark scripts (exhaustive grids, samplers, baselines), where many policies behave alike.

Every accuracy is teacher-forced exact match (`evaluate`), every cost the FLOP cost model
(`timing.cost_model`, label ``cost-model``): nothing here measures GPU time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SearchError, WorkloadError
from ..profile.buckets import bucketize
from ..profile.floor import floor_target, judge_confirmation, judge_floor, measure_floor, out_of_reach
from ..profile.profile import Floor
from .baselines import policy_cost, prefill_density
from .decode import evaluate

__all__ = ["Bench", "BucketResult"]


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
    floor: Floor  # the floor the bucket is judged against (on its bound when it has a confidence)
    confidence: float = 0.9  # level of the reported lower and upper bounds (the floor's, when it has one)
    # Per sample: in the bucket's confirmation part (`search.confirm.split_for_confirmation`). Given, `feasible`
    # judges as the search does; None judges the bucket whole, as the deploy gate does.
    confirm: list[bool] | None = None

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
        """Accuracy if every unevaluated sample were right (what the search compares with the floor)."""
        return sum(1 for c in self.correct if c is not False) / self.n

    def _dense(self) -> list[bool]:
        return self.dense if self.dense is not None else [bool(c) for c in self.correct]

    def target(self) -> float:
        return floor_target(self.floor, self.dense_accuracy)

    @property
    def dense_accuracy(self) -> float:
        dense = self._dense()
        return sum(dense) / len(dense)

    @property
    def feasible(self) -> bool:
        """Complete, and meets the floor: with a confirmation part as `sparsetune search` judges a candidate
        (`floor.judge_confirmation`); without, as the gate judges a bucket (the floor's
        bound or point estimate, no task broken beyond noise, every task holding it with a per-task floor)."""
        if not self.complete:
            return False
        dense, sparse = self._dense(), [bool(c) for c in self.correct]
        if self.confirm is None:
            return judge_floor(self.floor, dense, sparse, self.tasks, self.confidence).met
        parts = [tuple([x for x, c in zip(xs, self.confirm) if c == side] for xs in (dense, sparse, self.tasks))
                 for side in (False, True)]
        search, fresh = parts
        # The search's trial constraint is this rule with the confirmation part as dense had it, so a candidate
        # that holds on confirmation met it: the confirmation alone decides, as it does for the search.
        return judge_confirmation(self.floor, search, fresh).met

    def per_task(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        dense = self.dense if self.dense is not None else self.correct
        for task in sorted(set(self.tasks)):
            idx = [i for i, t in enumerate(self.tasks) if t == task]
            out[task] = {"n": len(idx), "sparse": sum(1 for i in idx if self.correct[i]),
                         "dense": sum(1 for i in idx if dense[i]),
                         "complete": all(self.correct[i] is not None for i in idx)}
        return out

    def _measure(self) -> Any:
        return measure_floor(self.floor, self._dense(), [bool(c) for c in self.correct], self.confidence)

    def lower_bound(self) -> float | None:
        """Lower confidence bound of the sparse accuracy, the floor's (complete results only)."""
        return self._measure().lower_bound if self.complete else None

    def upper_bound(self) -> float | None:
        """Upper confidence bound of the sparse accuracy: a floor above it is missed beyond noise."""
        return self._measure().upper_bound if self.complete else None


class Bench:
    """A model on a workload, bucketed at `edges`, judged against `floor`, with an on-disk evaluation cache.

    Evaluations are cached in `cache_dir` (one JSONL file per model and workload), per length bucket,
    per chunk of `chunk` samples and per *behaviour*: the key is what the policy returns at every KV
    length the bucket's samples reach, so a profile, a fixed budget and a token budget that pick the
    same budget for a bucket share one evaluation. A rerun with a warm cache evaluates nothing.
    """

    def __init__(self, model: str, workload: str, edges: Sequence[int], floor: Floor, cache_dir: Path,
                 chunk: int = 8, confidence: float = 0.9,
                 confirm_split: Callable[[list[Any]], tuple[list[Any], list[Any]]] | None = None) -> None:
        """`confirm_split`: judge as the search does, each bucket split by it into (search, confirmation) parts
        (`search.confirm.split_for_confirmation`); None: judge each bucket whole, as the deploy gate does."""
        from .inputs import load_inputs

        self.model_arg, self.edges, self.floor = model, tuple(edges), floor
        self.chunk, self.confidence = chunk, confidence
        self.loaded, self.work = load_inputs(model, workload)
        samples = self.work.samples
        groups = bucketize(samples, self.edges)
        if sum(map(len, groups)) != len(samples) or any(not g for g in groups):
            raise WorkloadError(f"{workload}: expected every sample in one of the buckets {self.edges}")
        self.groups = groups
        self.confirm: list[list[bool] | None] = [None] * len(groups)
        if confirm_split is not None:
            for b, g in enumerate(groups):
                fresh = {id(s) for s in confirm_split(g)[1]}
                self.confirm[b] = [id(s) in fresh for s in g]
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
        return [list(range(i, min(i + self.chunk, n))) for i in range(0, n, self.chunk)]

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
        from ..timing import attention_flops

        h, kv, d = self.shape
        num = den = 0.0
        for s in self.groups[b]:
            L = len(s.input_ids)
            w = attention_flops(L, d, h)
            num += w * policy_cost(policy, L, h, kv, d)
            den += w
        return num / den

    def sparsity(self, b: int, policy: Any) -> float:
        """FLOP-weighted prefill sparsity (skipped / visible key blocks) of the bucket under `policy`."""
        from ..timing import attention_flops

        h, kv, d = self.shape
        num = den = 0.0
        for s in self.groups[b]:
            L = len(s.input_ids)
            budget = None if policy is None else policy.lookup(L)
            dens = 1.0 if budget is None or budget.is_dense else prefill_density(
                L, json.dumps(budget.to_dict(), sort_keys=True), h, kv, d)
            w = attention_flops(L, d, h)
            num += w * (1.0 - dens)
            den += w
        return num / den

    def dense_flops(self, b: int) -> float:
        from ..timing import attention_flops

        h, _, d = self.shape
        return sum(attention_flops(len(s.input_ids), d, h) for s in self.groups[b])

    def workload_cost(self, policy: Any) -> float:
        """Relative attention cost over the whole split's length mix (dense-equivalent FLOPs / dense FLOPs)."""
        w = [self.dense_flops(b) for b in range(len(self.edges))]
        return sum(wb * self.cost(b, policy) for b, wb in enumerate(w)) / sum(w)

    def result(self, b: int, policy: Any, mode: str = "full") -> BucketResult:
        """Evaluate `policy` on bucket b: ``full`` evaluates every chunk; ``floor`` stops once the floor
        is out of reach (the search's early-stop rule, asked per chunk of 8 here, per forward batch in the search),
        so infeasible points cost a chunk or two."""
        if mode not in ("full", "floor"):
            raise ValueError(mode)
        key = self.key(b, policy)
        edge = self.edges[b]
        group = self.groups[b]
        recs = self._records.setdefault((edge, key), {})
        dense = None if key == "dense" else [bool(c) for c in self.result(b, None).correct]
        tasks = [s.task for s in group]
        run_policy = None if key == "dense" else policy
        for ci, idx in enumerate(self.chunks(b)):
            if ci in recs:
                continue
            if mode == "floor" and dense is not None:
                # Chunks run in order, so the first ci are known: stop once the rest cannot save the floor.
                partial = [c for k in range(ci) for c in recs[k]["correct"]]
                if len(partial) == sum(len(self.chunks(b)[k]) for k in range(ci)) and \
                        out_of_reach(self.floor, dense, partial, tasks, self.confidence):
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
                            seconds=seconds, floor=self.floor, confidence=self.confidence, confirm=self.confirm[b])

    def feasible_everywhere(self, policy: Any, mode: str = "floor") -> bool:
        """The floor in every bucket, stopping at the first miss. Buckets that rejected the most candidates so
        far go first (then the shorter, cheaper ones): the answer is the same in any order, the work is not."""
        order = sorted(range(len(self.edges)), key=lambda b: (-self._rejections.get(b, 0), b))
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
        raise SearchError("no candidate met the floor (dense should always be among them)")
