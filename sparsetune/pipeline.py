"""The steps every command shares: load model and workload, fill fidelity answers, parse buckets.

The CLI calls these and renders; tests and notebooks can call them directly.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from .errors import SearchError
from .models import LoadedModel, load_model
from .profile import Profile
from .workload import DEFAULT_ANSWER_TOKENS, Workload, load_workload

__all__ = ["load_inputs", "parse_edges", "run_search", "SearchRun"]


def load_inputs(model: str, workload: str, answer_tokens: int = DEFAULT_ANSWER_TOKENS) -> tuple[LoadedModel, Workload]:
    """The model and its workload; unlabelled samples get the dense model's greedy answer (fidelity mode)."""
    import torch

    from .evaluate import fill_answers

    torch.set_grad_enabled(False)
    loaded = load_model(model)
    work = load_workload(workload, loaded.tokenizer, loaded.max_positions, answer_tokens=answer_tokens,
                         vocab_size=loaded.vocab_size)
    if any(s.answer_ids is None for s in work.samples):
        work = dataclasses.replace(work, samples=fill_answers(loaded, work.samples, answer_tokens))
    return loaded, work


def parse_edges(text: str | None) -> tuple[int, ...] | None:
    """``512,1024,2048`` -> edges; ``auto`` or None -> None (quantiles of the workload's lengths)."""
    if text is None or text.strip() == "auto":
        return None
    try:
        edges = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise SearchError(f"buckets: must be 'auto' or comma-separated token counts like 512,1024,2048, got {text!r}") from None
    if not edges or any(e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise SearchError(f"buckets: edges must be positive and strictly increasing, got {text!r}")
    return edges


@dataclasses.dataclass
class SearchRun:
    profile: Profile
    outcomes: list  # list[search.BucketOutcome]
    profile_path: Path
    plot_path: Path | None
    storage: str  # where the trials are, for resuming


def run_search(model: str, workload: str, settings, out: str | os.PathLike[str], storage_url: str | None = None,
               answer_tokens: int = DEFAULT_ANSWER_TOKENS, on_event: Callable | None = None,
               plot: bool = True) -> SearchRun:
    """Search (or resume), then write the profile atomically and its frontier plot beside it."""
    import optuna

    from .search import open_storage, search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is ours; Optuna's per-trial INFO lines are noise
    out = Path(out)
    journal = out.with_name(out.stem + ".optuna.journal")
    storage = open_storage(storage_url, journal)
    loaded, work = load_inputs(model, workload, answer_tokens)
    profile, outcomes = search(loaded, work, settings, storage, storage_url=storage_url, on_event=on_event)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile.save(out)
    plot_path = None
    if plot:
        from .plot import plot_frontier

        plot_path = plot_frontier(outcomes, out.with_suffix(".png"),
                                  title=f"{loaded.name} on {work.name}: accuracy vs attention cost per bucket")
    return SearchRun(profile, outcomes, out, plot_path, storage_url or str(journal))
