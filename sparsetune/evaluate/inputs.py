"""The step every command that runs a model shares: load model and workload, fill fidelity answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..workload.files import DEFAULT_ANSWER_TOKENS, DEMO_HELDOUT, Workload, load_workload, workload_path
from ..workload.models import LoadedModel, load_model
from .progress import Progress, per_batch

__all__ = ["DEMO_HELDOUT", "check_inputs", "load_inputs", "load_more", "set_threads", "workload_source"]


def workload_source(name: str) -> str:
    """The one place built-in workload names beyond `demo` resolve: `demo-heldout` is the packaged held-out
    split (for `eval`, `apply --check` and `search --confirm` alike); anything else passes through."""
    return str(DEMO_HELDOUT) if name == "demo-heldout" else name


def check_inputs(model: str, *workloads: str | None) -> None:
    """The model resolves and every workload file exists (ModelError, WorkloadError): the cheap half of
    `load_inputs`, run before torch and the weights load, so a typo is refused at once."""
    from ..deploy import model_folder

    model_folder(model)
    for workload in workloads:
        if workload is not None:
            workload_path(workload_source(workload))


def set_threads(threads: int) -> None:
    """Torch's CPU threads for this process: intra-op, and inter-op where torch still allows it (only before
    its first parallel work). Workers sharing a host each take a share of the cores instead of all of them."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # parallel work already ran in this process: the inter-op pool is fixed
        pass


def load_inputs(model: str, workload: str, answer_tokens: int = DEFAULT_ANSWER_TOKENS,
                progress: Progress | None = None, threads: int | None = None) -> tuple[LoadedModel, Workload]:
    """The model and its workload; unlabelled samples get the dense model's greedy answer (fidelity mode),
    reported as `progress("answers", done, total)` per batch. `threads` (`set_threads`) applies before the
    model loads; None keeps torch's default."""
    import torch

    torch.set_grad_enabled(False)
    if threads is not None:
        set_threads(threads)
    loaded = load_model(model)
    return loaded, load_more(loaded, workload, answer_tokens, progress)


def load_more(loaded: LoadedModel, workload: str, answer_tokens: int = DEFAULT_ANSWER_TOKENS,
              progress: Progress | None = None) -> Workload:
    """Another workload for an already loaded model (held-out or confirmation samples), answers filled."""
    from .decode import fill_answers

    work = load_workload(workload_source(workload), loaded.tokenizer, loaded.max_positions,
                         answer_tokens=answer_tokens, vocab_size=loaded.vocab_size)
    todo = sum(s.answer_ids is None for s in work.samples)
    if todo:
        on_batch = per_batch(progress, "answers", todo)
        work = dataclasses.replace(work, samples=fill_answers(loaded, work.samples, answer_tokens, on_batch=on_batch))
    return work
