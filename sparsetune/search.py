"""Search: one Optuna study per length bucket, budgets under an accuracy floor, written as a profile.

Per bucket the study ``<study>:<max_len>`` searches the accuracy-changing parameters (keep or
tau, block size, sink, local). A dense-equivalent trial is enqueued first by whichever worker
creates the study; it *is* the bucket's dense baseline, so the baseline exists once per bucket
however many workers share the storage. Every trial evaluates teacher-forced exact match with
its budget, reports ``floor - accuracy`` (or the lower confidence bound) as the constraint and
the attention cost at the bucket's representative length as the objective: measured kernel
time on a GPU, the FLOP cost model on CPU, relative to dense either way.

The profile is built from the storage alone (`profile_from_storage`), so it does not depend on
which worker, or how many, ran the trials.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from .budget import METHODS, Budget
from .errors import SearchError
from .evaluate import EvalResult, evaluate, paired_lower_bound
from .models import LoadedModel
from .profile import (Accuracy, Bucket, DeviceSection, Floor, KernelConfig, ModelInfo, Profile, Provenance,
                      TaskAccuracy, WorkloadInfo)
from .timing import cost_model
from .workload import TokenSample, Workload

__all__ = [
    "BucketOutcome",
    "SearchSettings",
    "SearchSpace",
    "TrialEvent",
    "open_storage",
    "profile_from_storage",
    "retime_profile",
    "search",
]

CPU_DEVICE = "cpu"  # device key of cost-model configs in a profile


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna may choose per bucket. Ranges are wide; TPE narrows them."""

    method: str = "topk"
    block_sizes: tuple[int, ...] = (32, 64, 128)
    keep: tuple[float, float] = (0.02, 1.0)  # topk keep ratio, sampled on a log scale
    tau: tuple[float, float] = (0.5, 1.0)  # coverage mass
    max_sink: int = 2
    max_local: int = 2

    def suggest(self, trial: optuna.Trial) -> Budget:
        block = trial.suggest_categorical("block_size", list(self.block_sizes))
        sink = trial.suggest_int("sink", 0, self.max_sink)
        local = trial.suggest_int("local", 1, self.max_local)
        if self.method == "topk":
            keep = trial.suggest_float("keep", *self.keep, log=True)
            return Budget(method="topk", block_size=block, keep=keep, sink=sink, local=local)
        tau = trial.suggest_float("tau", *self.tau)
        return Budget(method="coverage", block_size=block, tau=tau, sink=sink, local=local)

    def dense_params(self) -> dict[str, Any]:
        """Parameters of the dense-equivalent trial (keep or tau of 1 keeps every visible block)."""
        ratio = "keep" if self.method == "topk" else "tau"
        return {"block_size": self.block_sizes[len(self.block_sizes) // 2], "sink": 0, "local": 1, ratio: 1.0}


@dataclass(frozen=True)
class SearchSettings:
    floor: float = 0.95
    floor_kind: str = "relative"  # relative: sparse >= floor * dense; absolute: sparse >= floor
    confidence: float | None = None  # apply the floor to a lower confidence bound at this level
    edges: tuple[int, ...] | None = None  # bucket upper edges; None = automatic quantiles
    min_per_bucket: int = 16  # automatic buckets and the "tiny bucket" warning
    trials: int = 40  # complete trials per bucket (shared by all workers)
    timeout: float | None = None  # seconds for the whole search
    study: str = "sparsetune"
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    batch_size: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.floor, bool) or not isinstance(self.floor, (int, float)) or not 0 < self.floor <= 1:
            raise SearchError(f"floor: must be in (0, 1], got {self.floor!r}")
        if self.floor_kind not in ("relative", "absolute"):
            raise SearchError(f"floor-kind: must be relative or absolute, got {self.floor_kind!r}")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise SearchError(f"confidence: must be in (0, 1), got {self.confidence!r}")
        if self.space.method not in METHODS:
            raise SearchError(f"method: must be one of {', '.join(METHODS)}, got {self.space.method!r}")
        if self.trials < 1:
            raise SearchError(f"trials: must be >= 1, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise SearchError(f"timeout: must be > 0 seconds, got {self.timeout}")

    @property
    def floor_spec(self) -> Floor:
        return Floor(kind=self.floor_kind, value=float(self.floor), confidence=self.confidence)


@dataclass(frozen=True)
class TrialEvent:
    """Progress of one bucket, sent after every finished trial (for progress displays)."""

    bucket: int
    max_len: int
    done: int  # complete trials in storage
    total: int
    best_cost: float | None  # cheapest feasible cost so far (relative to dense)
    seconds: float  # wall time this worker spent on the bucket
    last_state: str = "COMPLETE"


@dataclass(frozen=True)
class BucketOutcome:
    """A bucket's chosen point plus every trial, for the final table and the plot."""

    bucket: Bucket
    first_len: int
    trials: list[FrozenTrial]
    chosen: FrozenTrial | None
    floor_accuracy: float  # the accuracy the constraint compared with (absolute value)
    kernel: KernelConfig | None


# ---------------------------------------------------------------------------------------- storage


def open_storage(url: str | None, default_path: str | os.PathLike[str]) -> optuna.storages.BaseStorage:
    """The storage for `url`; None means a journal file at `default_path` (resumable, multi-process safe).

    RDB URLs (PostgreSQL, MySQL) get a heartbeat, so a killed worker's trial fails after the grace
    period and is retried once by another worker. SQLite works for one process only.
    """
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        path = os.fspath(default_path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if url.startswith(("postgresql", "mysql")):
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=10, grace_period=30,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url)
    if url.endswith((".log", ".journal")) or "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    raise SearchError(f"storage: unsupported URL {url!r} (use postgresql://, mysql://, sqlite:/// or a journal file path)")


def _study_name(prefix: str, max_len: int) -> str:
    return f"{prefix}:{max_len}"


def _create_or_load(storage: optuna.storages.BaseStorage, name: str, meta: dict[str, Any],
                    dense_params: dict[str, Any]) -> optuna.Study:
    """Create the bucket's study and enqueue its dense trial, or load it if another run made it.

    Creation is atomic in every Optuna storage, so exactly one worker enqueues the dense trial.
    """
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        old = study.user_attrs.get("meta")
        if old is not None and old.get("identity") != meta["identity"]:
            raise SearchError(
                f"study {name!r}: exists with another model, workload, floor or method; "
                f"use another --study or storage") from None
        return study
    study.set_user_attr("meta", meta)
    study.enqueue_trial(dense_params, user_attrs={"dense": True})
    return study


# ---------------------------------------------------------------------------------------- trials


_WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _fail_orphans(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Mark RUNNING trials of dead processes on this host as failed, so a resumed search goes on.

    File storages have no heartbeat; a process killed mid-trial leaves its trial RUNNING forever.
    (RDB storages do this themselves through their heartbeat, across hosts.)
    """
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name, _, pid = t.user_attrs.get("worker", "").rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_dense_trial(study: optuna.Study, space: SearchSpace) -> None:
    """Re-enqueue the dense trial when it failed (e.g. its worker was killed) and none is pending."""
    trials = study.get_trials(deepcopy=False)
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    if not any(_is_dense_trial(t) and t.state in live for t in trials):
        study.enqueue_trial(space.dense_params(), user_attrs={"dense": True})


def _is_dense_trial(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get("dense")) or t.params.get("keep", t.params.get("tau")) == 1.0


def _bits(correct: Sequence[bool]) -> str:
    return "".join("1" if c else "0" for c in correct)


def _unbits(bits: str) -> list[bool]:
    return [c == "1" for c in bits]


def _baseline(study: optuna.Study, wait_s: float = 600.0) -> list[bool] | None:
    """Per-sample dense correctness from the bucket's dense trial, waiting while another worker runs it."""
    deadline = time.monotonic() + wait_s
    while True:
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if _is_dense_trial(t) and t.state == TrialState.COMPLETE]
        if done:
            return _unbits(min(done, key=lambda t: t.number).user_attrs["correct"])
        pending = [t for t in trials if _is_dense_trial(t) and t.state in (TrialState.RUNNING, TrialState.WAITING)]
        if not pending or time.monotonic() > deadline:
            return None
        time.sleep(1.0)


def _floor_target(settings_floor: dict[str, Any], dense_accuracy: float) -> float:
    return settings_floor["value"] * dense_accuracy if settings_floor["kind"] == "relative" else settings_floor["value"]


def _measure(floor: dict[str, Any], dense: list[bool], sparse: list[bool]) -> tuple[float, float | None]:
    """(the accuracy compared with the floor, the lower bound if a confidence is set)."""
    if floor.get("confidence") is None:
        return sum(sparse) / len(sparse), None
    lower = max(0.0, paired_lower_bound(dense, sparse, floor["confidence"]).sparse_lower_bound)
    return lower, lower


class _Objective:
    """Evaluates one trial's budget on a bucket; stops early once the floor is out of reach."""

    def __init__(self, loaded: LoadedModel, samples: list[TokenSample], meta: dict[str, Any],
                 space: SearchSpace, study: optuna.Study, batch_size: int) -> None:
        self.loaded, self.samples, self.meta, self.space = loaded, samples, meta, space
        self.study, self.batch_size = study, batch_size
        self.timings: dict[tuple, dict[str, Any]] = {}  # launch-config timings per (bucket, budget)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _WORKER)
        budget = self.space.suggest(trial)  # the enqueued dense trial gets its fixed parameters back
        if budget.is_dense:  # the dense trial: its own baseline, at dense SDPA's cost
            trial.set_user_attr("dense", True)
            result = self._run(None, None)
            dense = result.correct
            cost: dict[str, Any] = {"relative": 1.0, "label": self.meta["timing"]}
        else:
            dense = _baseline(self.study)
            if dense is None:  # the dense trial failed: compute the baseline here
                dense = self._run(None, None).correct
            result = self._run(budget, dense)
            cost = self._cost(budget, 1.0 - result.sparsity)
        complete = result.n == len(self.samples)
        measured, lower = _measure(self.meta["floor"], dense, result.correct + [True] * (len(self.samples) - result.n))
        dense_acc = sum(dense) / len(dense)
        trial.set_user_attr("correct", _bits(result.correct))
        trial.set_user_attr("accuracy", sum(result.correct) / max(result.n, 1))
        trial.set_user_attr("complete", complete)
        trial.set_user_attr("sparsity", result.sparsity)
        trial.set_user_attr("cost", cost)
        if lower is not None:
            trial.set_user_attr("lower_bound", lower)
        trial.set_user_attr("seconds", round(result.seconds, 3))
        # Feasible when <= 0. An early-stopped trial reports its best case, which still misses.
        trial.set_constraint("floor", _floor_target(self.meta["floor"], dense_acc) - measured)
        return float(cost["relative"])

    def _run(self, budget: Budget | None, dense: list[bool] | None) -> EvalResult:
        """Evaluate in chunks; with a baseline, stop once even all-correct remaining samples miss the floor."""
        n = len(self.samples)
        order = list(range(n))
        correct: list[bool] = []
        visible = skipped = seconds = 0.0
        calls: dict[str, int] = {}
        target = None if dense is None else _floor_target(self.meta["floor"], sum(dense) / n)
        for start in range(0, n, self.batch_size * 2):
            chunk = order[start:start + self.batch_size * 2]
            r = evaluate(self.loaded, [self.samples[i] for i in chunk], budget, batch_size=self.batch_size)
            correct += r.correct
            visible += r.stats.visible_blocks
            skipped += r.stats.skipped_blocks
            seconds += r.seconds
            for k in ("sparse_calls", "dense_calls", "fallback_calls"):
                calls[k] = calls.get(k, 0) + getattr(r.stats, k)
            if target is not None and len(correct) < n:
                best_case, _ = _measure(self.meta["floor"], dense, correct + [True] * (n - len(correct)))
                if best_case < target:
                    break
        from .hf_attention import AttentionStats

        stats = AttentionStats(visible_blocks=visible, skipped_blocks=skipped, **calls)
        return EvalResult(correct=correct, per_task={}, stats=stats, seconds=seconds)

    def _cost(self, budget: Budget, density: float) -> dict[str, Any]:
        m = self.meta
        if m["timing"] == "cost-model":
            est = cost_model(m["rep_len"], budget.block_size, density, m["model"]["head_dim"],
                             m["model"]["heads"], m["model"]["kv_heads"])
            return {"relative": est.relative, "label": "cost-model"}
        key = (m["bucket"]["max_len"], budget)
        if key not in self.timings:
            from .timing import time_launch_configs

            t = time_launch_configs(m["rep_len"], budget, m["model"]["heads"], m["model"]["kv_heads"],
                                    m["model"]["head_dim"], dtype=torch.bfloat16)
            if t.total_ms is None or not t.dense_ms:
                raise SearchError(f"timing: no launch config ran for {budget.to_dict()}: {t.notes}")
            self.timings[key] = {"relative": t.total_ms / t.dense_ms, "label": "measured", "ms": t.best_ms,
                                 "selection_ms": t.selection_ms, "dense_ms": t.dense_ms, "config": t.best_config}
        return self.timings[key]


# ---------------------------------------------------------------------------------------- search


def _device() -> tuple[str, str]:
    """(device key, timing label) of this machine."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(), "measured"
    return CPU_DEVICE, "cost-model"


def _model_info(loaded: LoadedModel) -> dict[str, Any]:
    return {"name": loaded.name, "config_sha256": loaded.config_sha256, "layers": loaded.layers,
            "heads": loaded.heads, "kv_heads": loaded.kv_heads, "head_dim": loaded.head_dim,
            "max_positions": loaded.max_positions}


def search(
    loaded: LoadedModel,
    workload: Workload,
    settings: SearchSettings,
    storage: optuna.storages.BaseStorage,
    storage_url: str | None = None,
    on_event: Callable[[TrialEvent], None] | None = None,
) -> tuple[Profile, list[BucketOutcome]]:
    """Run (or resume) the per-bucket studies, then build the profile from the storage.

    The workload's samples must all have answers (call `evaluate.fill_answers` first).
    """
    from .workload import auto_edges, bucketize

    samples = workload.samples
    if any(s.answer_ids is None for s in samples):
        raise SearchError("workload: every sample needs an answer; fill fidelity answers first")
    lengths = [s.length for s in samples]
    edges = list(settings.edges) if settings.edges else auto_edges(lengths, min_per_bucket=settings.min_per_bucket)
    if edges[-1] < max(lengths):
        raise SearchError(f"buckets: the last edge {edges[-1]} is below the longest sample ({max(lengths)} tokens); "
                          f"add an edge >= {max(lengths)}")
    groups = bucketize(samples, edges)
    empty = [e for e, g in zip(edges, groups) if not g]
    if empty:
        raise SearchError(f"buckets: no sample falls in the bucket(s) ending at {', '.join(map(str, empty))}; "
                          f"sample lengths run from {min(lengths)} to {max(lengths)}")
    device, timing = _device()
    floor = {"kind": settings.floor_kind, "value": float(settings.floor), "confidence": settings.confidence}
    model = _model_info(loaded)
    work = {"name": workload.name, "sha256": workload.sha256, "samples": len(samples)}
    identity = {"model": loaded.config_sha256, "workload": workload.sha256, "floor": floor,
                "method": settings.space.method, "edges": edges}
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    prev = 0
    for i, (edge, group) in enumerate(zip(edges, groups)):
        meta = {
            "identity": identity, "model": model, "workload": work, "floor": floor,
            "method": settings.space.method, "timing": timing, "device": device,
            "bucket": {"index": i, "min_len": prev + 1 if i else min(lengths), "max_len": edge, "n": len(group)},
            "rep_len": int(statistics.median(s.length for s in group)),
            "tasks": [s.task for s in group], "edges": edges,
            # The shortest KV length any sample's forward sees: its prompt (answers are decoded after).
            "min_len": min(len(s.input_ids) for s in samples),
            "trials": settings.trials, "seed": settings.seed, "study": settings.study,
            "storage": storage_url,
        }
        prev = edge
        study = _create_or_load(storage, _study_name(settings.study, edge), meta, settings.space.dense_params())
        objective = _Objective(loaded, group, study.user_attrs.get("meta", meta), settings.space, study,
                               settings.batch_size)
        _optimize(study, storage, objective, settings, i, edge, deadline, len(edges) - i, on_event)
    profile = profile_from_storage(storage, settings.study)
    return profile, bucket_outcomes(storage, settings.study)


def _optimize(study: optuna.Study, storage: optuna.storages.BaseStorage, objective: _Objective,
              settings: SearchSettings, index: int, edge: int,
              deadline: float | None, buckets_left: int, on_event: Callable[[TrialEvent], None] | None) -> None:
    """Run trials until the bucket has `settings.trials` complete ones (counted in storage, for all workers).

    The sampler is reseeded before each trial from the seed and the number of complete trials, so
    a resumed search suggests exactly what an uninterrupted one would have.
    """
    start = time.monotonic()
    share = None if deadline is None else (deadline - start) / buckets_left
    failures = 0
    _fail_orphans(study, storage)
    while True:
        _ensure_dense_trial(study, objective.space)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        if done >= settings.trials or failures > settings.trials:
            break
        if share is not None and time.monotonic() - start >= share:
            break
        study.sampler = optuna.samplers.TPESampler(seed=settings.seed * 100_003 + done, n_startup_trials=5,
                                                   multivariate=True, warn_independent_sampling=False)
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[])
        last = study.get_trials(deepcopy=False)[-1]
        failures += last.state == TrialState.FAIL
        if on_event is not None:
            feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if _feasible(t)]
            on_event(TrialEvent(index, edge, sum(t.state == TrialState.COMPLETE for t in study.trials),
                                settings.trials, min((t.value for t in feasible), default=None),
                                time.monotonic() - start, last.state.name))


def _feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and bool(t.constraints) and all(v <= 0 for v in t.constraints.values())


# ---------------------------------------------------------------------------------------- profile


def _bucket_studies(storage: optuna.storages.BaseStorage, prefix: str) -> list[optuna.Study]:
    names = [n for n in optuna.get_all_study_names(storage) if n.rsplit(":", 1)[0] == prefix
             and n.rsplit(":", 1)[-1].isdigit()]
    if not names:
        raise SearchError(f"study {prefix!r}: no bucket studies in this storage (nothing searched yet?)")
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    studies = [s for s in studies if "meta" in s.user_attrs]
    return sorted(studies, key=lambda s: s.user_attrs["meta"]["bucket"]["max_len"])


def _per_task(tasks: list[str], dense: list[bool], sparse: list[bool]) -> dict[str, TaskAccuracy]:
    out = {}
    for task in sorted(set(tasks)):
        idx = [i for i, t in enumerate(tasks) if t == task]
        out[task] = TaskAccuracy(sparse=sum(sparse[i] for i in idx) / len(idx),
                                 dense=sum(dense[i] for i in idx) / len(idx), n=len(idx))
    return out


def _outcome(study: optuna.Study) -> BucketOutcome:
    """The bucket's choice: the cheapest feasible sparse trial; dense, with the reason, when none is."""
    meta = study.user_attrs["meta"]
    b, floor = meta["bucket"], meta["floor"]
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    dense_trials = [t for t in complete if _is_dense_trial(t)]
    base = min(dense_trials, key=lambda t: t.number) if dense_trials else None
    if base is None:
        raise SearchError(f"study {study.study_name!r}: the dense baseline trial has not completed; "
                          f"run the search (it resumes) before writing the profile")
    dense = _unbits(base.user_attrs["correct"])
    dense_acc = sum(dense) / len(dense)
    target = _floor_target(floor, dense_acc)
    sparse = [t for t in complete if not _is_dense_trial(t) and t.user_attrs.get("complete")]
    feasible = [t for t in sparse if _feasible(t)]
    chosen = min(feasible, key=lambda t: (t.value, -t.user_attrs["accuracy"], t.number), default=None)
    ratio = "keep" if meta["method"] == "topk" else "tau"
    kernel = None
    if chosen is not None and chosen.value < 1.0:
        p = chosen.params
        budget = Budget(method=meta["method"], block_size=p["block_size"], sink=p["sink"], local=p["local"],
                        **{ratio: p[ratio]})
        correct = _unbits(chosen.user_attrs["correct"])
        bucket = Bucket(
            max_len=b["max_len"], budget=budget,
            reason=f"cheapest of {len(feasible)} feasible budgets in {len(complete)} trials",
            accuracy=Accuracy(sparse=chosen.user_attrs["accuracy"], dense=dense_acc,
                              lower_bound=chosen.user_attrs.get("lower_bound"), n=len(dense),
                              per_task=_per_task(meta["tasks"], dense, correct)),
            sparsity=round(chosen.user_attrs["sparsity"], 6), cost=round(chosen.value, 6))
        kernel = _kernel_config(chosen.user_attrs["cost"], budget)
    else:
        if meta["floor"]["kind"] == "absolute" and dense_acc < floor["value"]:
            reason = f"dense accuracy {dense_acc:.3f} is itself below the absolute floor {floor['value']}"
        elif feasible:
            reason = f"no feasible sparse budget was cheaper than dense ({len(feasible)} feasible)"
        else:
            reason = f"no sparse budget met the floor ({target:.3f}) in {len(sparse)} sparse trials"
        bucket = Bucket(max_len=b["max_len"], dense=True, reason=reason,
                        accuracy=Accuracy(sparse=dense_acc, dense=dense_acc, n=len(dense),
                                          per_task=_per_task(meta["tasks"], dense, dense)),
                        sparsity=0.0, cost=1.0)
        chosen = base
    return BucketOutcome(bucket=bucket, first_len=b["min_len"], trials=trials, chosen=chosen,
                         floor_accuracy=target, kernel=kernel)


def _kernel_config(cost: dict[str, Any], budget: Budget) -> KernelConfig:
    from .kernels.configs import default_config

    if cost.get("label") == "measured" and cost.get("config"):
        return KernelConfig(**cost["config"], ms=cost["ms"], dense_ms=cost["dense_ms"],
                            selection_ms=cost["selection_ms"] or None)
    return KernelConfig(**default_config(budget.block_size))


def bucket_outcomes(storage: optuna.storages.BaseStorage, prefix: str) -> list[BucketOutcome]:
    return [_outcome(s) for s in _bucket_studies(storage, prefix)]


def profile_from_storage(storage: optuna.storages.BaseStorage, prefix: str) -> Profile:
    """The profile of everything the studies `<prefix>:<max_len>` hold, whoever ran their trials.

    Deterministic for given storage contents: `created` is the last trial's completion time.
    """
    studies = _bucket_studies(storage, prefix)
    outcomes = [_outcome(s) for s in studies]
    meta = studies[-1].user_attrs["meta"]
    missing = [e for e in meta["edges"] if e not in {o.bucket.max_len for o in outcomes}]
    if missing:
        raise SearchError(f"study {prefix!r}: buckets ending at {', '.join(map(str, missing))} were never "
                          f"started; run the search (it resumes) before writing the profile")
    finished = [t.datetime_complete for s in studies for t in s.get_trials(deepcopy=False) if t.datetime_complete]
    created = max(finished).astimezone().replace(microsecond=0)
    m = meta["model"]
    kernels = {o.bucket.max_len: o.kernel for o in outcomes if o.kernel is not None}
    return Profile(
        model=ModelInfo(**m),
        workload=WorkloadInfo(**meta["workload"]),
        floor=Floor(kind=meta["floor"]["kind"], value=meta["floor"]["value"], confidence=meta["floor"]["confidence"]),
        method=meta["method"],
        provenance=Provenance(
            sparsetune=_version(), created=created.isoformat().replace("+00:00", "Z"), study=prefix,
            trials_per_bucket=max(sum(t.state == TrialState.COMPLETE for t in s.get_trials(deepcopy=False))
                                  for s in studies),
            seed=meta["seed"], storage=Provenance.create(study=prefix, trials_per_bucket=0, seed=0,
                                                         storage=meta["storage"]).storage),
        min_len=meta["min_len"],
        buckets=tuple(o.bucket for o in outcomes),
        devices={meta["device"]: DeviceSection(timing=meta["timing"], kernels=kernels)} if kernels else {},
    )


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------- retime


def retime_profile(profile: Profile, on_bucket: Callable[[int, Any], None] | None = None) -> Profile:
    """Time every sparse bucket's launch configs on this machine's GPU and add its device section.

    Budgets and accuracy are untouched: they do not depend on the GPU. Needs CUDA.
    """
    from .timing import time_launch_configs

    if not torch.cuda.is_available():
        raise SearchError("retime: needs a CUDA GPU; this machine has none (kernels are never timed on CPU)")
    m = profile.model
    kernels = {}
    for i, bucket in enumerate(profile.buckets):
        if bucket.dense or bucket.budget is None:
            continue
        t = time_launch_configs(bucket.max_len, bucket.budget, m.heads, m.kv_heads, m.head_dim)
        if on_bucket is not None:
            on_bucket(i, t)
        if t.best_config is not None:
            kernels[bucket.max_len] = KernelConfig(**t.best_config, ms=t.best_ms, dense_ms=t.dense_ms,
                                                   selection_ms=t.selection_ms or None)
    return profile.with_device(torch.cuda.get_device_name(), DeviceSection(timing="measured", kernels=kernels))
