"""What sparse attention may keep: the one budget type shared by selection, search and profiles."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

from ..errors import BudgetError

__all__ = ["Budget", "ESTIMATORS", "EstimatorSpec", "MAX_BLOCK_SIZE", "METHODS", "MIN_BLOCK_SIZE",
           "is_power_of_two"]

METHODS = ("topk", "coverage")  # the rules: a fixed share of blocks, or the blocks that reach a mass


@dataclass(frozen=True)
class EstimatorSpec:
    """How a budget ranks key blocks: its name, its one parameter (`stride`) and what the search may try.

    The estimator functions live in ``attention/estimate_*.py`` (this layer only names them); the search reads
    `strides` as its choices and `cost` for the cost model.
    """

    name: str
    summary: str
    strides: tuple[int, ...] = ()  # the stride values a search tries; empty: no stride parameter
    default_stride: int | None = None
    deployable: bool = True  # False: a diagnostic that costs a dense pass (search needs --allow-oracle)
    # False: its scores rank blocks but are not attention mass, so coverage's tau would mean something else
    mass: bool = True

    def refuses(self, method: str) -> str | None:
        """Why this estimator cannot serve `method` (None: it can); Budget and the search both ask here."""
        if method == "coverage" and not self.mass:
            return f"{self.name} ranks blocks by peak, not attention mass, so it takes topk keeps, not coverage"
        return None

    def selection_flops(self, seq_len: int, block_size: int, head_dim: int, heads: int, kv_heads: int,
                        stride: int | None = None) -> float:
        """FLOPs of selecting blocks for one prefill of `seq_len` tokens (what the cost model adds to sparse).

        pooled: mean-pool q and k (one add per element), the pooled score matrix (2*D per block pair per KV
        head) and the per-row sort. sampled and peak (oracle: stride 1): exact q.k of the L/stride sampled queries
        against the keys they see (L/2 on average, 2*D per pair per query head), softmax and block sums
        (about 4 per pair). salient: peak's, plus the queries of an eighth of the blocks (L/2 keys each) and of
        the last block twice and the two before it (every key). antidiagonal: (L/S)^2/2 group pairs of 2*S*D each per query head, plus softmax.
        vslash: the last 64 queries against all keys. quest: per-channel key extremes (2 per key element)
        and a 3*D bound per block pair per query head. Each adds the per-row sort. Counts, not
        milliseconds: they rank budgets.
        """
        blocks = math.ceil(seq_len / block_size)
        sort = blocks * blocks * math.log2(max(blocks, 2)) * kv_heads
        if self.name == "pooled":
            pooling = (heads + kv_heads) * seq_len * head_dim
            return pooling + 2.0 * blocks * blocks * head_dim * kv_heads + sort
        if self.name == "quest":
            extremes = 2.0 * seq_len * head_dim * kv_heads
            return extremes + 3.0 * (blocks * blocks / 2.0) * head_dim * heads + sort
        if self.name == "antidiagonal":
            groups = seq_len / (stride or 1)
            return groups * groups / 2.0 * heads * (2.0 * (stride or 1) * head_dim + 4.0) + sort
        if self.name == "vslash":  # the last 64 queries (attention.estimate_vslash) see every key
            pairs = min(64, seq_len) * seq_len * heads
        elif self.name == "salient":  # peak's, the salient blocks' (L/2 keys), the probe's and the tail's (all L)
            salient = math.ceil(blocks / 8) * block_size
            pairs = ((seq_len / (stride or 1) + salient) * (seq_len / 2.0) + 4 * block_size * seq_len) * heads
        else:  # sampled, peak, oracle: L/stride queries against the L/2 keys they see on average
            pairs = (seq_len / (stride or 1)) * (seq_len / 2.0) * heads
        return pairs * (2.0 * head_dim + 4.0) + sort


ESTIMATORS: dict[str, EstimatorSpec] = {spec.name: spec for spec in (
    EstimatorSpec("pooled", "mean-pooled query block . mean-pooled key block (cheap; dilutes short needles)"),
    EstimatorSpec("sampled", "exact softmax of every stride-th query of each query block, mass per key block",
                  strides=(8, 16, 32), default_stride=16),
    EstimatorSpec("peak", "as sampled, but each key block's largest mass over the sampled queries and the group's heads",
                  strides=(8, 16, 32), default_stride=16, mass=False),
    EstimatorSpec("salient", "as peak, plus every query of the last 3 query blocks and of the eighth of key blocks "
                             "those last queries read most (a needle's own tokens)",
                  strides=(8, 16, 32), default_stride=16, mass=False),
    EstimatorSpec("antidiagonal", "XAttention: strided antidiagonal sums of each tile, softmaxed, mass per key block",
                  strides=(4, 8, 16), default_stride=8),
    EstimatorSpec("vslash", "vertical + slash mass of the last 64 queries' exact attention, pooled to blocks"),
    EstimatorSpec("quest", "Quest: q.k bounded by per-channel key min/max per block, each block's last query"),
    EstimatorSpec("oracle", "exact softmax mass of every query (a dense pass: the ceiling, a diagnostic)",
                  deployable=False),
)}
MIN_BLOCK_SIZE = 16  # the smallest tile tl.dot takes
# Far beyond any useful sparse block (kernels tile 16-128): a larger one is a typo, and one block of
# it would cover whole requests (dense by construction).
MAX_BLOCK_SIZE = 4096


def is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class Budget:
    """A sparsity budget for one length bucket.

    `topk` keeps ``ceil(keep * visible)`` key blocks per query block; `coverage` keeps the
    smallest set whose estimated attention mass reaches `tau`. Either way the `sink` first
    blocks and the `local` most recent blocks (the diagonal block counts as one) are kept.
    The `estimator` (`ESTIMATORS`) ranks the blocks; `stride` is its parameter where it has one.
    """

    method: Literal["topk", "coverage"] = "topk"
    block_size: int = 64  # tokens per sparse block, for queries and keys alike
    keep: float | None = None  # topk: fraction of causally visible key blocks, in (0, 1]
    tau: float | None = None  # coverage: attention mass to reach, in (0, 1]
    sink: int = 1  # first blocks always kept (attention sinks)
    local: int = 1  # most recent blocks always kept, >= 1 so no query row is empty
    estimator: str = "pooled"  # how blocks are ranked (ESTIMATORS)
    stride: int | None = None  # sampled, peak: every stride-th query is scored; antidiagonal: the diagonal stride
    # Structure: the first `dense_layers` layers attend densely (MInference's starting layer: early layers
    # spread attention widely); the last `dense_tail` query blocks keep every visible block (where a prompt's
    # question sits; decode steps are in the last block, so they are dense too).
    dense_layers: int = 0
    dense_tail: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BudgetError(f"method: must be one of {', '.join(METHODS)}, got {self.method!r}")
        spec = ESTIMATORS.get(self.estimator) if isinstance(self.estimator, str) else None
        if spec is None:
            raise BudgetError(f"estimator: must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if why := spec.refuses(self.method):
            raise BudgetError(f"estimator: {why}")
        if not spec.strides:
            if self.stride is not None:
                raise BudgetError(f"stride: not used by estimator {self.estimator!r}, got {self.stride!r}")
        else:
            if self.stride is None:
                object.__setattr__(self, "stride", spec.default_stride)
            if not is_power_of_two(self.stride) or self.stride > self.block_size:  # type: ignore[arg-type]
                raise BudgetError(f"stride: must be a power of two <= block_size ({self.block_size}), "
                                  f"got {self.stride!r}")
        if not is_power_of_two(self.block_size) or not MIN_BLOCK_SIZE <= self.block_size <= MAX_BLOCK_SIZE:
            raise BudgetError(f"block_size: must be a power of two in [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}], "
                              f"got {self.block_size!r}")
        ratio = "keep" if self.method == "topk" else "tau"
        other = "tau" if ratio == "keep" else "keep"
        value = getattr(self, ratio)
        if getattr(self, other) is not None:
            raise BudgetError(f"{other}: not used by method {self.method!r}, got {getattr(self, other)!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BudgetError(f"{ratio}: must be a number in (0, 1], got {value!r}")
        if not 0 < value <= 1:
            raise BudgetError(f"{ratio}: must be in (0, 1], got {value!r}")
        object.__setattr__(self, ratio, float(value))
        for name, low in (("sink", 0), ("local", 1), ("dense_layers", 0), ("dense_tail", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise BudgetError(f"{name}: must be an integer >= {low}, got {v!r}")

    @property
    def ratio(self) -> float:
        """`keep` or `tau`, whichever the method uses."""
        return self.keep if self.method == "topk" else self.tau  # type: ignore[return-value]

    def with_ratio(self, value: float) -> "Budget":
        """This budget with another `keep` or `tau` (whichever the method uses): a member of its family."""
        return replace(self, **{"keep" if self.method == "topk" else "tau": value})

    @property
    def ranking(self) -> str:
        """How the budget ranks blocks, as tables, the gate and the plot name it: `sampled/16`, `pooled`."""
        return self.estimator + (f"/{self.stride}" if self.stride else "")

    @property
    def is_dense(self) -> bool:
        """True when the budget keeps every visible block by construction."""
        return self.ratio >= 1.0

    @classmethod
    def dense(cls, block_size: int = 64) -> "Budget":
        return cls(method="topk", block_size=block_size, keep=1.0, sink=0, local=1)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set; structure knobs at 0 (their default) are left out."""
        return {k: v for k, v in asdict(self).items()
                if v is not None and not (k in ("dense_layers", "dense_tail") and v == 0)}

    def to_text(self) -> str:
        """The command-line form `parse` reads back: ``keep=0.3,block=64,sink=1,local=1,estimator=sampled,stride=16``."""
        ratio = f"keep={self.keep!r}" if self.method == "topk" else f"tau={self.tau!r}"
        text = f"{ratio},block={self.block_size},sink={self.sink},local={self.local}"
        if self.estimator != "pooled":
            text += f",estimator={self.estimator}" + (f",stride={self.stride}" if self.stride is not None else "")
        for name in ("dense_layers", "dense_tail"):
            if getattr(self, name):
                text += f",{name}={getattr(self, name)}"
        return text

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """Parse ``keep=0.3,block=64,sink=1,local=1`` (or ``tau=0.9,...``) as typed on a command line.

        ``method=`` takes a rule (topk, coverage) or an estimator (``method=oracle,keep=0.2``): a method is an
        estimator plus a rule, and the rule follows from ``keep`` or ``tau``.
        """
        aliases = {"block": "block_size", **{f.name: f.name for f in dataclass_fields(cls)}}
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            if not sep or key.strip() not in aliases:
                raise BudgetError(
                    f"budget: expected key=value with keys {', '.join(sorted(set(aliases)))}, got {part!r}")
            name = aliases[key.strip()]
            try:
                fields[name] = raw.strip() if name in ("method", "estimator") else (
                    float(raw) if name in ("keep", "tau") else int(raw))
            except ValueError:
                raise BudgetError(f"budget.{name}: must be a number, got {raw.strip()!r}") from None
        if fields.get("method") in ESTIMATORS:
            if "estimator" in fields and fields["estimator"] != fields["method"]:
                raise BudgetError(f"budget: method={fields['method']} and estimator={fields['estimator']} disagree")
            fields["estimator"] = fields.pop("method")
        if "keep" not in fields and "tau" not in fields:  # else the budget would silently be dense
            raise BudgetError(f"budget: {text.strip()!r} has no keep= or tau=; a budget needs one (keep=1 is dense)")
        fields.setdefault("method", "coverage" if "tau" in fields else "topk")
        return cls(**fields)
