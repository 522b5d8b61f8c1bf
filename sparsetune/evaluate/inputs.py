"""The step every command that runs a model shares: load model and workload, fill fidelity answers."""

from __future__ import annotations

import dataclasses

from ..workload.files import DEFAULT_ANSWER_TOKENS, Workload, load_workload
from ..workload.models import LoadedModel, load_model

__all__ = ["load_inputs", "load_more"]


def load_inputs(model: str, workload: str, answer_tokens: int = DEFAULT_ANSWER_TOKENS) -> tuple[LoadedModel, Workload]:
    """The model and its workload; unlabelled samples get the dense model's greedy answer (fidelity mode)."""
    import torch

    torch.set_grad_enabled(False)
    loaded = load_model(model)
    return loaded, load_more(loaded, workload, answer_tokens)


def load_more(loaded: LoadedModel, workload: str, answer_tokens: int = DEFAULT_ANSWER_TOKENS) -> Workload:
    """Another workload for an already loaded model (held-out or confirmation samples), answers filled."""
    from .decode import fill_answers

    work = load_workload(workload, loaded.tokenizer, loaded.max_positions, answer_tokens=answer_tokens,
                         vocab_size=loaded.vocab_size)
    if any(s.answer_ids is None for s in work.samples):
        work = dataclasses.replace(work, samples=fill_answers(loaded, work.samples, answer_tokens))
    return work
