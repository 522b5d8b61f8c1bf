"""TPE reseeded per trial, so a resumed or distributed search samples reproducibly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["LaneSeededTPE"]

_SEED_LANE = 1_000_003  # seed stride between concurrently started trials


class LaneSeededTPE(optuna.samplers.BaseSampler):
    """TPE, reseeded for every trial from (base seed, settled (complete or pruned) trials, lane).

    The lane is the number of earlier-started trials (lower numbers) still running when this one
    starts. A lone worker always has lane 0, so its seeds are ``seed * 100003 + complete`` and a
    resumed search suggests exactly what an uninterrupted one would have. Trials that run at the
    same time have different lanes or different complete counts, so concurrent workers draw
    different budgets, and TPE's constant liar keeps them away from each other's running trials.
    The seed of each trial is kept in its `seed` user attr.
    """

    def __init__(self, seed: int) -> None:
        self._base = seed
        self.last_seed = seed * 100_003
        self._inner = self._tpe(self.last_seed)

    @staticmethod
    def _tpe(seed: int) -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)  # pruned: settled too
        lane = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        self.last_seed = self._base * 100_003 + done + _SEED_LANE * lane
        self._inner = self._tpe(self.last_seed)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
