"""What a bucket's samples and dense baseline allow: a floor they cannot show, a set-up that is broken."""

from __future__ import annotations

import warnings

import optuna

from ..errors import SearchError, SearchWarning
from ..profile.floor import resolution
from ..stats import samples_needed
from .results import dense_record
from .space import SearchSettings
from .study import BucketMeta, meta_of

__all__ = ["check_baseline", "warn_unresolvable"]


def warn_unresolvable(metas: list[BucketMeta], settings: SearchSettings) -> None:
    """Before any trial: say which buckets' confirmation parts are too small to show the floor even
    if dense were always right and sparse lost nothing."""
    floor = settings.floor_rule
    if floor.kind != "relative" or floor.confidence is None or floor.value >= 1:
        return
    need = samples_needed(floor.value, 1.0, floor.confidence)
    for meta in metas:
        if meta.n + meta.confirm_n < need:
            warnings.warn(
                f"bucket <= {meta.max_len} tokens: {meta.n + meta.confirm_n} samples cannot show a floor of "
                f"{floor.value} x dense at {floor.confidence:.0%} confidence even if dense were always right and "
                f"sparse lost none; that needs at least {need}; the bucket will stay dense", SearchWarning,
                stacklevel=3)


def check_baseline(study: optuna.Study, settings: SearchSettings) -> bool:
    """Once the bucket's dense trial is done: refuse a broken set-up, say what n can resolve. Returns whether
    the baseline was there to check."""
    record = dense_record(study)
    if record is None:
        return False
    edge = meta_of(study).max_len
    dense = record.correct
    accuracy = sum(dense) / len(dense)
    if accuracy < settings.min_dense:
        raise SearchError(
            f"bucket <= {edge} tokens: dense accuracy is {accuracy:.3f} on {len(dense)} samples, below the "
            f"minimum {settings.min_dense}; every budget would 'meet' a floor relative to it. Check the prompt "
            f"format and answers, or score against the model's own output (fidelity mode: prompts without "
            f"answers), or lower --min-dense")
    floor = settings.floor_rule
    if floor.confidence is None or record.confirm_correct is None:
        return True
    # The choice is judged on all the bucket's samples (`floor.holds_on_confirmation`).
    res = resolution(floor, [*record.correct, *record.confirm_correct])
    if not res.resolvable:
        warnings.warn(
            f"bucket <= {edge} tokens: with dense right on {res.dense_right} of {res.n} samples, the floor "
            f"cannot be shown at {floor.confidence:.0%} confidence even if sparse lost none ({res.samples_needed} "
            f"samples would do); the bucket will stay dense", SearchWarning, stacklevel=2)
    elif res.losses_allowed <= 1:
        warnings.warn(
            f"bucket <= {edge} tokens: with {res.n} samples, losing {res.losses_allowed + 1} fails the floor at "
            f"{floor.confidence:.0%} confidence, so one sample decides; more samples per bucket would let the "
            f"search choose sparser budgets", SearchWarning, stacklevel=2)
    return True
