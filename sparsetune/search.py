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

Many workers (processes or hosts) may share one storage, PostgreSQL for several hosts:
- every bucket gets exactly `trials` complete trials in all: a worker starts a trial only while
  complete plus running trials are below that, and a trial that finds itself surplus (a race of
  two starts) is skipped at once, before any evaluation;
- a worker whose bucket is full (the rest is running elsewhere) or whose dense baseline is being
  computed elsewhere moves on to the next bucket and comes back, so workers never queue behind
  each other; it returns only once every bucket is complete, so each worker writes the same
  profile;
- each trial's TPE seed comes from the base seed, the complete trials and the trial's lane (how
  many earlier-started trials are still running), so concurrent trials never share a seed while
  a single worker draws exactly the sequence an uninterrupted run would (`seed` user attr);
- on RDB storages a heartbeat marks a killed worker's trial failed after the grace period and
  re-queues it once (`RetryHeartbeatStaleTrialCallback`) for whichever worker comes next.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
import warnings
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
    "BucketProgress",
    "SearchSettings",
    "SearchSpace",
    "TrialEvent",
    "bucket_outcomes",
    "heartbeat_settings",
    "open_storage",
    "profile_from_storage",
    "retime_profile",
    "search",
    "study_progress",
]

CPU_DEVICE = "cpu"  # device key of cost-model configs in a profile

# RDB heartbeat (seconds). A running trial beats every HEARTBEAT_S; one silent for the grace period
# (GRACE_MULTIPLE beats) is failed by the next worker that looks, and re-queued once. Whole seconds
# (Optuna's rule); override with SPARSETUNE_HEARTBEAT_S / SPARSETUNE_GRACE_S (the tests use 1 and 3).
HEARTBEAT_S = 15
GRACE_MULTIPLE = 4
MAX_RETRY = 1  # re-runs of a trial whose worker died
POLL_S = 1.0  # how often a worker with nothing to start looks at the storage again
_SEED_LANE = 1_000_003  # seed stride between concurrently started trials


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
        url = _with_driver(url)
        heartbeat, grace = heartbeat_settings()
        return _rdb_storage(url, heartbeat, grace)
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url)
    if url.endswith((".log", ".journal")) or "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    raise SearchError(f"storage: unsupported URL {url!r} (use postgresql://, mysql://, sqlite:/// or a journal file path)")


def _rdb_storage(url: str, heartbeat: int, grace: int, attempts: int = 4) -> optuna.storages.RDBStorage:
    """RDBStorage with heartbeat and retry of stale trials.

    Workers started together on an empty database race to create Optuna's tables, and all but
    one fail with a unique-key violation; they try again once the tables exist.
    """
    for attempt in range(attempts):
        with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY))
            except ImportError as exc:
                raise SearchError(f"storage: {url.split(':', 1)[0]} needs its database driver "
                                  f"(pip install 'sparsetune[postgres]'): {exc}") from None
            except Exception as exc:  # sqlalchemy errors: server down, no database, bad user, table race
                text = str(exc).strip()
                if attempt + 1 < attempts and ("duplicate key" in text or "already exists" in text):
                    time.sleep(0.5 + attempt)
                    continue
                first = text.splitlines()[0] if text else type(exc).__name__
                raise SearchError(f"storage: cannot open {_redact(url)}: {first}") from None
    raise AssertionError("unreachable")


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, while the `postgres` extra installs
    psycopg2; name psycopg2 explicitly when only it is there, so the URL users type just works.
    """
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds for RDB storages: the environment's, else the defaults.

    The grace period defaults to four heartbeats, so one slow beat never fails a live trial.
    """
    heartbeat = _env_seconds("SPARSETUNE_HEARTBEAT_S") or HEARTBEAT_S
    grace = _env_seconds("SPARSETUNE_GRACE_S") or GRACE_MULTIPLE * heartbeat
    if grace <= heartbeat:
        raise SearchError(f"SPARSETUNE_GRACE_S: must be longer than the heartbeat ({heartbeat} s), got {grace}")
    return heartbeat, grace


def _env_seconds(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise SearchError(f"{name}: must be a positive whole number of seconds, got {text!r}")
    return int(text)


def _redact(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _study_name(prefix: str, max_len: int) -> str:
    return f"{prefix}:{max_len}"


def _create_or_load(storage: optuna.storages.BaseStorage, name: str, meta: dict[str, Any],
                    dense_params: dict[str, Any], wait_s: float = 30.0) -> optuna.Study:
    """Create the bucket's study and enqueue its dense trial, or load it if another worker made it.

    Creation is atomic in every Optuna storage, so exactly one worker enqueues the dense trial. It
    does so before writing the study's `meta`, and a loader waits for `meta`: a worker that loads
    a study in the instant after its creation therefore never sees it without its dense trial.
    """
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        deadline = time.monotonic() + wait_s
        while "meta" not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)
        old = study.user_attrs.get("meta")
        if old is None:  # its creator died between creating and describing it
            study.set_user_attr("meta", meta)
        elif old.get("identity") != meta["identity"]:
            raise SearchError(
                f"study {name!r}: exists with another model, workload, floor or method; "
                f"use another --study or storage") from None
        return study
    study.enqueue_trial(dense_params, user_attrs={"dense": True})
    study.set_user_attr("meta", meta)
    return study


# ---------------------------------------------------------------------------------------- trials


def _worker_id() -> str:
    """This process, as the `worker` user attr of its trials: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None


def _reap(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Fail the trials of dead workers so the bucket can go on without them.

    RDB storages with a heartbeat: Optuna's `fail_stale_trials` fails trials silent for the grace
    period, on any host, and its callback re-queues each once. (Optuna runs it before every trial
    too; this is for a worker that is waiting.) File storages: RUNNING trials of dead processes
    on this host (a journal file is for one host).
    """
    if _has_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    else:
        _fail_orphans(study, storage)


def _fail_orphans(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Mark RUNNING trials of dead processes on this host as failed, so a resumed search goes on.

    File storages have no heartbeat; a process killed mid-trial leaves its trial RUNNING forever.
    (RDB storages with a heartbeat do this themselves, across hosts, and retry the trial.)
    """
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name, _, pid = t.user_attrs.get("worker", "").rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def _ensure_dense_trial(study: optuna.Study, space: SearchSpace) -> None:
    """Re-enqueue the dense trial when it failed (e.g. its worker was killed) and none is pending.

    Two workers may both re-enqueue it; the later copy is skipped when it starts (`_Objective._skip`).
    """
    trials = study.get_trials(deepcopy=False)
    if not any(_is_dense_trial(t) and t.state in _LIVE for t in trials):
        study.enqueue_trial(space.dense_params(), user_attrs={"dense": True})


class _SkippedTrial(Exception):
    """A trial that another trial makes unnecessary: recorded as FAIL with a `skipped` user attr."""


class _LaneSeededTPE(optuna.samplers.BaseSampler):
    """TPE, reseeded for every trial from (base seed, complete trials, lane).

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
        done = sum(t.state == TrialState.COMPLETE for t in trials)
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


def _is_dense_trial(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get("dense")) or t.params.get("keep", t.params.get("tau")) == 1.0


def _bits(correct: Sequence[bool]) -> str:
    return "".join("1" if c else "0" for c in correct)


def _unbits(bits: str) -> list[bool]:
    return [c == "1" for c in bits]


def _baseline(study: optuna.Study, storage: optuna.storages.BaseStorage, wait_s: float = 600.0) -> list[bool] | None:
    """Per-sample dense correctness from the bucket's dense trial, waiting while another worker runs it.

    None when no dense trial is complete or running (the caller then computes the baseline itself).
    """
    deadline = time.monotonic() + wait_s
    while True:
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if _is_dense_trial(t) and t.state == TrialState.COMPLETE]
        if done:
            return _unbits(min(done, key=lambda t: t.number).user_attrs["correct"])
        running = [t for t in trials if _is_dense_trial(t) and t.state == TrialState.RUNNING]
        if not running or time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
        _reap(study, storage)


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
                 space: SearchSpace, study: optuna.Study, storage: optuna.storages.BaseStorage,
                 batch_size: int, target: int) -> None:
        self.loaded, self.samples, self.meta, self.space = loaded, samples, meta, space
        self.study, self.storage, self.batch_size, self.target = study, storage, batch_size, target
        self.timings: dict[tuple, dict[str, Any]] = {}  # launch-config timings per (bucket, budget)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _worker_id())
        trial.set_user_attr("seed", getattr(self.study.sampler, "last_seed", None))
        budget = self.space.suggest(trial)  # the enqueued dense trial gets its fixed parameters back
        is_dense = budget.is_dense or bool(trial.user_attrs.get("dense"))
        reason = self._skip(trial.number, is_dense)
        if reason is not None:
            trial.set_user_attr("skipped", reason)
            raise _SkippedTrial(f"skipped: {reason}")
        if is_dense:  # the dense trial: its own baseline, at dense SDPA's cost
            trial.set_user_attr("dense", True)
            result = self._run(None, None)
            dense = result.correct
            cost: dict[str, Any] = {"relative": 1.0, "label": self.meta["timing"]}
        else:
            dense = _baseline(self.study, self.storage)
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

    def _skip(self, number: int, is_dense: bool) -> str | None:
        """Why trial `number` is not needed (before any work), or None.

        Trial numbers order the starts of all workers (the storage assigns them atomically), so
        when two workers race for the last slot, or both re-queue the dense trial, the later
        start sees the earlier one and steps aside.
        """
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.number != number]
        if is_dense:
            first = [t.number for t in trials if _is_dense_trial(t) and t.state in _LIVE and t.number < number]
            return f"dense trial {first[0]} is this bucket's baseline" if first else None
        ahead = sum(t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number < number)
                    for t in trials)
        # The dense trial needs a slot of its own until it runs.
        ahead += not any(_is_dense_trial(t) and t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials)
        if ahead >= self.target:
            return f"the bucket already has its {self.target} trials complete or running"
        return None

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
    runs, prev = [], 0
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
        runs.append(_BucketRun(i, edge, group, meta))
    _run_buckets(runs, loaded, storage, settings, deadline, on_event)
    profile = profile_from_storage(storage, settings.study)
    return profile, bucket_outcomes(storage, settings.study)


@dataclass
class _BucketRun:
    """One bucket as this worker sees it."""

    index: int
    edge: int
    samples: list[TokenSample]
    meta: dict[str, Any]
    study: optuna.Study | None = None
    objective: _Objective | None = None
    share: float | None = None  # seconds of this worker's time for the bucket (with a timeout)
    spent: float = 0.0
    failures: int = 0  # this worker's failed trials here (skipped ones excluded)
    seen_done: int = -1  # complete trials at the last progress event


def _run_buckets(runs: list[_BucketRun], loaded: LoadedModel, storage: optuna.storages.BaseStorage,
                 settings: SearchSettings, deadline: float | None,
                 on_event: Callable[[TrialEvent], None] | None) -> None:
    """Work through the buckets in order until each has `settings.trials` complete trials, in all workers.

    A bucket whose remaining trials all run elsewhere (or whose dense baseline is running
    elsewhere) is left for the next pass, so a worker never idles while another bucket has work.
    When every unfinished bucket is busy elsewhere, the worker waits, failing the trials of dead
    workers meanwhile, so a killed worker's trial is retried here. A lone worker never finds a
    bucket busy, so it runs the buckets one after another exactly as before.
    """
    pending = list(runs)
    while pending:
        busy, ran = [], False
        for k, run in enumerate(pending):
            if run.study is None:
                run.study = _create_or_load(storage, _study_name(settings.study, run.edge), run.meta,
                                            settings.space.dense_params())
                run.study.sampler = _LaneSeededTPE(settings.seed)
                run.objective = _Objective(loaded, run.samples, run.study.user_attrs.get("meta", run.meta),
                                           settings.space, run.study, storage, settings.batch_size, settings.trials)
                if deadline is not None:
                    run.share = (deadline - time.monotonic()) / (len(pending) - k)
            status, worked = _work(run, storage, settings, on_event)
            ran = ran or worked
            if status == "busy":
                busy.append(run)
        pending = busy
        if pending and not ran:
            if deadline is not None and time.monotonic() >= deadline:
                return  # the rest is running elsewhere; this worker's time is up
            time.sleep(POLL_S)
            for run in pending:
                _reap(run.study, storage)
                _emit(run, settings, on_event, "waiting", only_if_changed=True)


def _work(run: _BucketRun, storage: optuna.storages.BaseStorage, settings: SearchSettings,
          on_event: Callable[[TrialEvent], None] | None) -> tuple[str, bool]:
    """Run trials on one bucket while it needs more than the trials running elsewhere.

    Returns (done | busy | timeout | failing, whether a trial ran). Every trial's sampler seed comes
    from `_LaneSeededTPE`, so a resumed search suggests exactly what an uninterrupted one would have.
    """
    study, target = run.study, settings.trials
    assert study is not None and run.objective is not None
    if not _has_heartbeat(storage):
        _fail_orphans(study, storage)
    ran = False
    while True:
        _ensure_dense_trial(study, run.objective.space)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if done >= target:
            return "done", ran
        if run.failures > target:
            return "failing", ran
        if run.share is not None and run.spent >= run.share:
            return "timeout", ran
        dense_running = any(_is_dense_trial(t) and t.state == TrialState.RUNNING for t in trials)
        dense_done = any(_is_dense_trial(t) and t.state == TrialState.COMPLETE for t in trials)
        if done + running >= target or (dense_running and not dense_done):
            return "busy", ran
        finished: list[FrozenTrial] = []
        start = time.monotonic()
        study.optimize(run.objective, n_trials=1, catch=(Exception,),
                       callbacks=[lambda _study, trial: finished.append(trial)])
        run.spent += time.monotonic() - start
        ran = True
        last = finished[-1]
        skipped = "skipped" in last.user_attrs
        run.failures += last.state == TrialState.FAIL and not skipped
        _emit(run, settings, on_event, "SKIPPED" if skipped else last.state.name)


def _emit(run: _BucketRun, settings: SearchSettings, on_event: Callable[[TrialEvent], None] | None,
          state: str, only_if_changed: bool = False) -> None:
    if on_event is None or run.study is None:
        return
    complete = run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if only_if_changed and len(complete) == run.seen_done:
        return
    run.seen_done = len(complete)
    best = min((t.value for t in complete if _feasible(t)), default=None)
    on_event(TrialEvent(run.index, run.edge, len(complete), settings.trials, best, run.spent, state))


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


@dataclass(frozen=True)
class BucketProgress:
    """Where one bucket's study stands, from the storage (for `sparsetune collect` and dashboards)."""

    max_len: int
    target: int  # complete trials the search that created the study asked for
    complete: int
    running: int
    waiting: int  # queued: the dense trial, or a dead worker's trial to retry
    failed: int  # including skipped ones
    retried: int  # trials that re-run a dead worker's trial
    workers: tuple[str, ...]  # `host:pid` of every worker with a complete trial here
    baseline: bool  # the dense trial is complete
    best_cost: float | None  # cheapest feasible sparse cost so far (relative to dense)


def _retried_trial_number(t: FrozenTrial) -> int | None:
    with warnings.catch_warnings():  # experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)


def study_progress(storage: optuna.storages.BaseStorage, prefix: str) -> list[BucketProgress]:
    """Per bucket of the studies `<prefix>:<max_len>`: trial counts by state, workers, best cost so far.

    Buckets no worker has reached yet are listed with zero trials.
    """
    rows = []
    studies = _bucket_studies(storage, prefix)
    for study in studies:
        meta = study.user_attrs["meta"]
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        sparse = [t for t in complete if not _is_dense_trial(t) and t.user_attrs.get("complete") and _feasible(t)]
        rows.append(BucketProgress(
            max_len=meta["bucket"]["max_len"], target=meta["trials"], complete=len(complete),
            running=sum(t.state == TrialState.RUNNING for t in trials),
            waiting=sum(t.state == TrialState.WAITING for t in trials),
            failed=sum(t.state == TrialState.FAIL for t in trials),
            retried=sum(_retried_trial_number(t) is not None for t in trials),
            workers=tuple(sorted({t.user_attrs["worker"] for t in complete if "worker" in t.user_attrs})),
            baseline=any(_is_dense_trial(t) for t in complete),
            best_cost=min((t.value for t in sparse), default=None)))
    meta = studies[-1].user_attrs["meta"]
    started = {r.max_len for r in rows}
    rows += [BucketProgress(max_len=e, target=meta["trials"], complete=0, running=0, waiting=0, failed=0,
                            retried=0, workers=(), baseline=False, best_cost=None)
             for e in meta["edges"] if e not in started]
    return sorted(rows, key=lambda r: r.max_len)


def profile_from_storage(storage: optuna.storages.BaseStorage, prefix: str) -> Profile:
    """The profile of everything the studies `<prefix>:<max_len>` hold, whoever ran their trials.

    Deterministic for given storage contents: `created` is the last complete trial's completion time.
    """
    studies = _bucket_studies(storage, prefix)
    outcomes = [_outcome(s) for s in studies]
    meta = studies[-1].user_attrs["meta"]
    missing = [e for e in meta["edges"] if e not in {o.bucket.max_len for o in outcomes}]
    if missing:
        raise SearchError(f"study {prefix!r}: buckets ending at {', '.join(map(str, missing))} were never "
                          f"started; run the search (it resumes) before writing the profile")
    # Complete trials only: skipped or failed ones may still end after the last trial that counts.
    finished = [t.datetime_complete for s in studies for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
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
