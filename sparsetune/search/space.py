"""What a search may choose (`SearchSpace`) and how it runs (`SearchSettings`); validated on creation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..errors import SearchError
from ..profile.budget import ESTIMATORS, METHODS, Budget
from ..profile.buckets import MIN_PER_BUCKET
from ..profile.profile import Floor
from .confirm import CONFIRM_LIMIT

__all__ = ["MIN_BLOCKS", "MIN_SHARE", "SearchSettings", "SearchSpace", "parse_choices"]


def parse_choices(name: str, text: str) -> tuple[int, ...]:
    """``"0,2"`` -> (0, 2): a structure knob's values as typed on a command line; SearchError names `name`."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SearchError(f"{name}: a comma-separated list of distinct integers >= 0, got {text!r}") from None

# A block size is searched at a bucket only if its representative length spans at least this many
# blocks. With fewer, the always-kept sink and local blocks cover (nearly) every row, so most budgets
# are dense by construction: at 256 tokens, block 128 makes 2 blocks, dense for 5 of 6 sink/local pairs.
MIN_BLOCKS = 4

# A bucket's share of the workload's dense attention FLOPs below which it is left dense (`SearchSettings.min_share`).
# Every sparse bucket is one more chance for a fresh draw to fail the gate, and on a short bucket the search
# decides on fewer kept blocks (8 of 32 tokens at 256) with as few samples: 2% bounds what it could gain.
MIN_SHARE = 0.02


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna may choose per bucket. Ranges are wide; TPE narrows them."""

    method: str = "topk"
    # Estimators the study chooses among (a categorical dimension when more than one); `stride` choices are
    # each estimator's own (`EstimatorSpec.strides`), as the parameter `<estimator>_stride`.
    estimators: tuple[str, ...] = ("pooled",)
    # Structure knobs (`Budget.dense_layers`, `dense_tail`): searched as categorical choices when more than one.
    dense_layers: tuple[int, ...] = (0,)
    dense_tails: tuple[int, ...] = (0,)
    block_sizes: tuple[int, ...] = (32, 64, 128)
    keep: tuple[float, float] = (0.02, 1.0)  # topk keep ratio, sampled on a log scale
    tau: tuple[float, float] = (0.5, 1.0)  # coverage mass
    max_sink: int = 2
    max_local: int = 2
    # Simple policies enqueued after the dense trial, per estimator (block 64 or the nearest searched, sink 1,
    # local 1, the estimator's default stride): the study then holds them, and TPE starts from measured points.
    anchors: bool = True
    anchor_keeps: tuple[float, ...] = (0.5, 0.3, 0.2, 0.1)
    anchor_tokens: tuple[int, ...] = (128, 256, 512, 768, 1024)  # fixed token budgets, as keeps per bucket
    anchor_taus: tuple[float, ...] = (0.95, 0.9, 0.8)

    def suggest(self, trial: optuna.Trial) -> Budget:
        """Suggest every searched parameter (a dimension with one value is fixed, not suggested), in a fixed
        order (seeded TPE replays it), and return the budget they make (`budget_of`)."""
        trial.suggest_categorical("block_size", list(self.block_sizes))
        trial.suggest_int("sink", 0, self.max_sink)
        trial.suggest_int("local", 1, self.max_local)
        estimator = (self.estimators[0] if len(self.estimators) == 1
                     else trial.suggest_categorical("estimator", list(self.estimators)))
        if self.strides(estimator):
            trial.suggest_categorical(f"{estimator}_stride", list(self.strides(estimator)))
        for name, values in (("dense_layers", self.dense_layers), ("dense_tail", self.dense_tails)):
            if len(values) > 1:
                trial.suggest_categorical(name, list(values))
        if self.method == "topk":
            trial.suggest_float("keep", *self.keep, log=True)
        else:
            trial.suggest_float("tau", *self.tau)
        return self.budget_of(trial.params)

    def anchor_params(self, rep_len: int, carried: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
        """Parameters of the anchor trials at a bucket of representative length `rep_len` (none unless
        `anchors`): fixed token budgets (`anchor_tokens` as keeps at this length) and fixed keeps (or
        coverages) per estimator, plus `carried` (budgets confirmed at a shorter bucket, already rescaled).
        In bisection order (`_bisection`): one that holds prunes every costlier budget, one that misses
        every smaller one of its family (`Objective._unneeded`), so about log2 of them run."""
        if not self.anchors:
            return []
        block = min(self.block_sizes, key=lambda b: (abs(b - 64), b))
        if self.method == "topk":
            ratio = "keep"
            low, high = self.keep
            values = {round(min(max(v, low), high), 4) for v in
                      (*self.anchor_keeps, *(t / rep_len for t in self.anchor_tokens if t < rep_len))}
        else:
            ratio, values = "tau", set(self.anchor_taus)
        out = []
        for estimator in self.estimators:
            chosen: dict[str, Any] = {} if len(self.estimators) == 1 else {"estimator": estimator}
            for name, knob in (("dense_layers", self.dense_layers), ("dense_tail", self.dense_tails)):
                if len(knob) > 1:
                    chosen[name] = knob[0]
            strides = self.strides(estimator)
            if strides:
                default = ESTIMATORS[estimator].default_stride
                chosen[f"{estimator}_stride"] = default if default in strides else strides[-1]
            out += [{"block_size": block, "sink": min(1, self.max_sink), "local": 1, ratio: v, **chosen}
                    for v in values if v < 1]
        out += [dict(p) for p in carried if p.get("block_size") in self.block_sizes]
        unique = {tuple(sorted(p.items())): p for p in out}
        return _bisection(sorted(unique.values(), key=lambda p: (p[ratio], p.get("estimator", ""),
                                                                 sorted(p.items()))))

    def carried(self, params: dict[str, Any], from_len: int, to_len: int) -> list[dict[str, Any]]:
        """A budget confirmed at a bucket of length `from_len` as candidates at `to_len`: the same keep, and
        the keep that keeps as many tokens (longer inputs tolerate more sparsity: the premise)."""
        ratio = "keep" if self.method == "topk" else "tau"
        if ratio not in params or params[ratio] >= 1:
            return []
        out = [dict(params)]
        if ratio == "keep":
            out.append({**params, "keep": round(max(params["keep"] * from_len / to_len, self.keep[0]), 4)})
        return out

    def identity(self) -> dict[str, Any]:
        """What of this space a resumed study must share (with the model, workload, floor, ...): only what
        differs from the defaults, so studies written before estimators and structure knobs existed resume."""
        out: dict[str, Any] = {}
        if self.estimators != ("pooled",):
            out["estimators"] = list(self.estimators)
        if (self.dense_layers, self.dense_tails) != ((0,), (0,)):
            out["structure"] = [list(self.dense_layers), list(self.dense_tails)]
        return out

    def strides(self, estimator: str) -> tuple[int, ...]:
        """The estimator's stride choices that every searched block size takes (one distribution per study)."""
        return tuple(s for s in ESTIMATORS[estimator].strides if s <= min(self.block_sizes))

    def budget_of(self, params: dict[str, Any]) -> Budget:
        """The budget a trial with these parameters evaluated (`suggest`'s inverse)."""
        estimator = params.get("estimator", self.estimators[0])
        ratio = "keep" if self.method == "topk" else "tau"
        return Budget(method=self.method, block_size=params["block_size"], sink=params["sink"],  # type: ignore[arg-type]
                      local=params["local"], estimator=estimator, stride=params.get(f"{estimator}_stride"),
                      dense_layers=params.get("dense_layers", self.dense_layers[0]),
                      dense_tail=params.get("dense_tail", self.dense_tails[0]), **{ratio: params[ratio]})

    def at_length(self, rep_len: int) -> SearchSpace:
        """The space for a bucket of representative length `rep_len`: block sizes that split it into at least
        `MIN_BLOCKS` blocks (the smallest block size whatever the length, so a space is never empty)."""
        fit = tuple(b for b in self.block_sizes if math.ceil(rep_len / b) >= MIN_BLOCKS)
        return dataclasses.replace(self, block_sizes=fit or (min(self.block_sizes),))

    def restricted_to(self, block_sizes: Sequence[int] | None) -> SearchSpace:
        """This space with the block sizes a bucket's study was created with (`BucketMeta.block_sizes`), so
        resumed runs and other workers suggest from the same distributions; None (a study of an earlier
        version, which offered every block size) keeps them all."""
        return self if block_sizes is None else dataclasses.replace(self, block_sizes=tuple(block_sizes))

    def dense_params(self) -> dict[str, Any]:
        """Parameters of the dense-equivalent trial (keep or tau of 1 keeps every visible block)."""
        ratio = "keep" if self.method == "topk" else "tau"
        return {"block_size": self.block_sizes[len(self.block_sizes) // 2], "sink": 0, "local": 1, ratio: 1.0}


def _bisection(items: list[Any]) -> list[Any]:
    """`items` (sorted) in the order a binary search visits them: the middle, then the middles of the halves,
    level by level."""
    out, spans = [], [(0, len(items))]
    while spans:
        nxt = []
        for lo, hi in spans:
            if lo < hi:
                mid = (lo + hi) // 2
                out.append(items[mid])
                nxt += [(lo, mid), (mid + 1, hi)]
        spans = nxt
    return out


@dataclass(frozen=True)
class SearchSettings:
    floor: float = 0.95
    floor_kind: str = "relative"  # relative: sparse >= floor * dense; absolute: sparse >= floor
    # The floor applies to a one-sided lower confidence bound at this level (None: the point estimate).
    confidence: float | None = 0.9
    per_task: bool = False  # every task must hold the floor on its own (else: the aggregate, no task broken)
    min_dense: float = 0.2  # a bucket whose dense accuracy is below this is a broken set-up: refuse it
    confirm_fraction: float = 1 / 3  # share of each bucket's samples (per task) kept for confirmation
    confirm_limit: int = CONFIRM_LIMIT  # failed confirmations below the choice after which nothing cheaper is confirmed
    edges: tuple[int, ...] | None = None  # bucket upper edges; None = automatic quantiles
    min_per_bucket: int = MIN_PER_BUCKET  # automatic buckets and the "tiny bucket" warning
    # A bucket holding less of the workload's dense attention FLOPs than this is left dense, unsearched: the most
    # any budget could save there is that share, not worth one more bucket that a fresh draw can fail.
    min_share: float = MIN_SHARE
    trials: int = 40  # complete trials per bucket (shared by all workers)
    timeout: float | None = None  # seconds for the whole search
    study: str = "sparsetune"
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    batch_size: int = 8
    threads: int | None = None  # torch CPU threads of this worker (None: torch's default, all cores)
    allow_oracle: bool = False  # let the search use non-deployable estimators (the oracle: a dense pass)

    def __post_init__(self) -> None:
        if isinstance(self.floor, bool) or not isinstance(self.floor, (int, float)) or not 0 < self.floor <= 1:
            raise SearchError(f"floor: must be in (0, 1], got {self.floor!r}")
        if self.floor_kind not in ("relative", "absolute"):
            raise SearchError(f"floor-kind: must be relative or absolute, got {self.floor_kind!r}")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise SearchError(f"confidence: must be in (0, 1), got {self.confidence!r}")
        if isinstance(self.min_dense, bool) or not isinstance(self.min_dense, (int, float)) or not 0 <= self.min_dense < 1:
            raise SearchError(f"min-dense: must be in [0, 1), got {self.min_dense!r}")
        if not 0 < self.confirm_fraction < 1:
            raise SearchError(f"confirm-fraction: must be in (0, 1), got {self.confirm_fraction!r}")
        if self.confirm_limit < 1:
            raise SearchError(f"confirm-limit: must be >= 1, got {self.confirm_limit}")
        if isinstance(self.min_share, bool) or not isinstance(self.min_share, (int, float)) or not 0 <= self.min_share < 1:
            raise SearchError(f"min-share: must be in [0, 1), got {self.min_share!r}")
        if self.space.method not in METHODS:
            raise SearchError(f"method: must be one of {', '.join(METHODS)}, got {self.space.method!r}")
        unknown = [e for e in self.space.estimators if e not in ESTIMATORS]
        if unknown or not self.space.estimators or len(set(self.space.estimators)) < len(self.space.estimators):
            raise SearchError(f"estimator: a comma-separated list of distinct {', '.join(ESTIMATORS)}, got "
                              f"{','.join(self.space.estimators) or 'nothing'}")
        for name, values in (("dense-layers", self.space.dense_layers), ("dense-tail", self.space.dense_tails)):
            if (not values or len(set(values)) < len(values)
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values)):
                raise SearchError(f"{name}: a comma-separated list of distinct integers >= 0, got "
                                  f"{','.join(map(str, values)) or 'nothing'}")
        if why := next(filter(None, (ESTIMATORS[e].refuses(self.space.method) for e in self.space.estimators)), None):
            raise SearchError(f"estimator: {why}")
        diagnostic = [e for e in self.space.estimators if not ESTIMATORS[e].deployable]
        if diagnostic and not self.allow_oracle:
            raise SearchError(f"estimator: {', '.join(diagnostic)} costs a dense pass (a diagnostic ceiling, not "
                              "deployable); pass --allow-oracle to search with it anyway")
        if self.trials < 1:
            raise SearchError(f"trials: must be >= 1, got {self.trials}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise SearchError(f"seed: must be an integer in [0, 2**32), got {self.seed!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SearchError(f"batch-size: must be an integer >= 1, got {self.batch_size!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SearchError(f"threads: must be an integer >= 1, got {self.threads!r}")
        if not self.study or not isinstance(self.study, str):
            raise SearchError(f"study: must be a non-empty name, got {self.study!r}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise SearchError(f"timeout: must be > 0 seconds, got {self.timeout}")

    def identity(self) -> dict[str, Any]:
        """What of these settings, beyond the model, workload, floor and buckets, a resumed study must share: the
        space's (`SearchSpace.identity`), and a min share other than the default (studies older than it lack it)."""
        return {**self.space.identity(), **({"min_share": self.min_share} if self.min_share != MIN_SHARE else {})}

    @property
    def floor_rule(self) -> Floor:
        """The floor as the profile records it (and `profile.floor` judges it)."""
        return Floor(kind=self.floor_kind, value=float(self.floor), confidence=self.confidence,  # type: ignore[arg-type]
                     per_task=self.per_task)
