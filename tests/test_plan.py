"""search.plan knows a budget's block counts before it runs: checked against the masks select_blocks builds."""

from __future__ import annotations

import pytest
import torch

from sparsetune.attention.select import select_blocks
from sparsetune.profile.budget import Budget
from sparsetune.search.plan import mask_key, planned_density


def _measured(budget: Budget, prompt: int, answer: int, seed: int = 0) -> tuple[float, list[torch.Tensor]]:
    """(density, masks) of a prefill of `prompt` tokens then answer-1 decode steps on random q and k, counted
    as the runtime counts them (`hf_attention._block_counts`)."""
    g = torch.Generator().manual_seed(seed)
    total = prompt + answer - 1
    q = torch.randn(1, 4, total, 16, generator=g)
    k = torch.randn(1, 2, total, 16, generator=g)
    masks = [select_blocks(q[:, :, :prompt], k[:, :, :prompt], budget)]
    masks += [select_blocks(q[:, :, n - 1:n], k[:, :, :n], budget) for n in range(prompt + 1, total + 1)]
    visible = sum(int(m.visible_blocks().sum()) * m.batch * m.heads for m in masks)
    kept = sum(int(m.kv_num_blocks.sum()) for m in masks)
    return kept / visible, [m.to_block_bool() for m in masks]


@pytest.mark.parametrize("budget", [
    Budget(block_size=32, keep=0.3, sink=1, local=1),
    Budget(block_size=16, keep=0.07, sink=2, local=2),
    Budget(block_size=32, keep=0.5, sink=0, local=1, dense_tail=1),
    Budget(block_size=16, keep=0.2, sink=1, local=1, estimator="sampled", stride=8),
])
@pytest.mark.parametrize("shape", [(200, 8), (257, 3), (96, 1)])
def test_planned_density_is_what_select_keeps(budget, shape):
    measured, _ = _measured(budget, *shape)
    assert planned_density(budget, [shape]) == pytest.approx(measured, abs=1e-12)


def test_coverage_plans_a_lower_bound():
    budget = Budget(method="coverage", block_size=32, tau=0.6, sink=1, local=1)
    measured, _ = _measured(budget, 300, 4)
    assert planned_density(budget, [(300, 4)]) <= measured


def test_equal_mask_keys_mean_equal_masks_and_unequal_keys_differ():
    shape = (300, 4)
    a, b, c = (Budget(block_size=32, keep=x, sink=1, local=1) for x in (0.2, 0.19, 0.3))
    assert mask_key(a, [shape]) == mask_key(b, [shape])
    assert all(torch.equal(x, y) for x, y in zip(_measured(a, *shape)[1], _measured(b, *shape)[1]))
    assert mask_key(a, [shape]) != mask_key(c, [shape])
    assert any(not torch.equal(x, y) for x, y in zip(_measured(a, *shape)[1], _measured(c, *shape)[1]))
    # the ranking is part of the key: another estimator keeps other blocks
    assert mask_key(a, [shape]) != mask_key(Budget(block_size=32, keep=0.2, sink=1, local=1, estimator="sampled",
                                                   stride=16), [shape])
    # a longer sample can tell two keeps apart that a short one cannot
    assert mask_key(a, [(64, 1)]) == mask_key(c, [(64, 1)])
