"""What `sparsetune eval` compares with dense, checked before anything heavy is imported or any model loads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from ..errors import BudgetError
from ..profile.budget import Budget
from ..profile.buckets import parse_edges
from ..profile.profile import Profile, load_profile

__all__ = ["AUTO", "eval_policy"]

AUTO = "auto"  # `--buckets auto`: length quantiles of the workload, as `search` makes them


def eval_policy(profile: str | os.PathLike[str] | None, budget: str | None, buckets: str | None = None,
                confidence: float = 0.9, threads: int | None = None,
                ) -> tuple[Profile | Budget | None, Sequence[int] | Literal["auto"] | None]:
    """The policy `sparsetune eval` compares with dense, and the bucket edges of its table.

    The policy is a profile file or a fixed budget (at most one); neither is dense itself (None), the
    baseline. `confidence` and `threads` are checked here too, before any model loads. `buckets` is `--buckets` as typed: edges, `auto` (`AUTO`: quantiles, once the lengths are
    known), or None: a profile's own edges, else one bucket (None).
    """
    if profile is not None and budget is not None:
        raise BudgetError("eval: give at most one of --profile and --budget (neither evaluates dense)")
    if isinstance(confidence, bool) or not 0 < confidence < 1:
        raise BudgetError(f"confidence: must be in (0, 1), got {confidence!r}")
    if threads is not None and threads < 1:
        raise BudgetError(f"threads: must be an integer >= 1, got {threads!r}")
    if budget is not None and not budget.strip():
        raise BudgetError("--budget: empty; give key=value pairs like keep=0.3,block=64, or leave --budget out "
                          "to evaluate dense")
    auto = buckets is not None and buckets.strip() == AUTO
    edges = AUTO if auto else parse_edges(buckets)
    if profile is not None:
        loaded = load_profile(profile)
        return loaded, edges if edges is not None else loaded.edges
    return (Budget.parse(budget) if budget is not None else None), edges
