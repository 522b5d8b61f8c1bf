"""What sparse attention may keep: the one budget type shared by selection, search and profiles."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import BudgetError

__all__ = ["Budget", "MAX_BLOCK_SIZE", "METHODS", "MIN_BLOCK_SIZE", "is_power_of_two"]

METHODS = ("topk", "coverage")
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
    """

    method: Literal["topk", "coverage"] = "topk"
    block_size: int = 64  # tokens per sparse block, for queries and keys alike
    keep: float | None = None  # topk: fraction of causally visible key blocks, in (0, 1]
    tau: float | None = None  # coverage: attention mass to reach, in (0, 1]
    sink: int = 1  # first blocks always kept (attention sinks)
    local: int = 1  # most recent blocks always kept, >= 1 so no query row is empty

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BudgetError(f"method: must be one of {', '.join(METHODS)}, got {self.method!r}")
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
        for name, low in (("sink", 0), ("local", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise BudgetError(f"{name}: must be an integer >= {low}, got {v!r}")

    @property
    def ratio(self) -> float:
        """`keep` or `tau`, whichever the method uses."""
        return self.keep if self.method == "topk" else self.tau  # type: ignore[return-value]

    @property
    def is_dense(self) -> bool:
        """True when the budget keeps every visible block by construction."""
        return self.ratio >= 1.0

    @classmethod
    def dense(cls, block_size: int = 64) -> "Budget":
        return cls(method="topk", block_size=block_size, keep=1.0, sink=0, local=1)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """Parse ``keep=0.3,block=64,sink=1,local=1`` (or ``tau=0.9,...``) as typed on a command line."""
        aliases = {"block": "block_size", "block_size": "block_size", "keep": "keep", "tau": "tau",
                   "sink": "sink", "local": "local", "method": "method"}
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            if not sep or key.strip() not in aliases:
                raise BudgetError(
                    f"budget: expected key=value with keys {', '.join(sorted(set(aliases)))}, got {part!r}")
            name = aliases[key.strip()]
            try:
                fields[name] = raw.strip() if name == "method" else (
                    float(raw) if name in ("keep", "tau") else int(raw))
            except ValueError:
                raise BudgetError(f"budget.{name}: must be a number, got {raw.strip()!r}") from None
        fields.setdefault("method", "coverage" if "tau" in fields else "topk")
        if fields["method"] == "topk":
            fields.setdefault("keep", 1.0)
        return cls(**fields)
