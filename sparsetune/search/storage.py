"""Where trials live: opening a storage (journal file, SQLite, PostgreSQL/MySQL with a heartbeat) and
failing the trials of dead workers so a bucket can go on without them.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .._io import redact_url
from ..errors import SearchError
from .study import worker_of

__all__ = ["GRACE_MULTIPLE", "HEARTBEAT_S", "MAX_RETRY", "default_journal", "fail_orphans", "has_heartbeat", "heartbeat_settings", "open_storage",
           "reap", "storage_for", "worker_id"]

# RDB heartbeat (seconds). A running trial beats every HEARTBEAT_S; one silent for the grace period
# (GRACE_MULTIPLE beats) is failed by the next worker that looks, and re-queued once. Whole seconds
# (Optuna's rule); override with SPARSETUNE_HEARTBEAT_S / SPARSETUNE_GRACE_S (the tests use 1 and 3).
HEARTBEAT_S = 15
GRACE_MULTIPLE = 4
MAX_RETRY = 1  # re-runs of a trial whose worker died


def default_journal(out: str | os.PathLike[str]) -> Path:
    """The journal file a search keeps beside its profile `out` when no --storage URL is given."""
    out = Path(out)
    return out.with_name(out.stem + ".optuna.journal")


def storage_for(out: str | os.PathLike[str], url: str | None = None,
                existing: bool = False) -> tuple[optuna.storages.BaseStorage, str]:
    """(the storage of the search writing `out`, where it is): `url`, else the default journal beside `out`.

    `existing`: the trials must be there already (collecting, not searching), so a missing journal or
    SQLite file is an error rather than a new empty file: a read creates nothing.
    """
    journal = default_journal(out)
    if existing and url is None and not journal.exists():
        raise SearchError(f"storage: no {journal} (the search's default storage for -o {out}); "
                          f"pass the search's --storage URL")
    if existing and url is not None:
        local = _local_file(url)
        if local is not None and not local.is_file():
            raise SearchError(f"storage: no such file {local} (a status or collect reads an existing storage; "
                              f"pass the search's --storage)")
    return open_storage(url, journal), url or str(journal)


def _local_file(url: str) -> Path | None:
    """The file a journal path or ``sqlite:///`` URL names (None for a server URL or in-memory SQLite)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        return Path(path.split("?", 1)[0]) if path and path != ":memory:" else None
    if url.endswith((".log", ".journal")) or "://" not in url:
        return Path(url).expanduser()
    return None


def open_storage(url: str | None, default_path: str | os.PathLike[str]) -> optuna.storages.BaseStorage:
    """The storage for `url`; None means a journal file at `default_path` (resumable, multi-process safe).

    RDB URLs (PostgreSQL, MySQL) get a heartbeat, so a killed worker's trial fails after the grace
    period and is retried once by another worker. SQLite works for one process only. A file storage
    whose folder is missing or unwritable is a SearchError naming it.
    """
    if url is None:
        path = os.fspath(default_path)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as exc:
            raise SearchError(f"storage: cannot create the folder of {path}: {exc.strerror or exc}") from None
        return _journal(path)
    if url.startswith(("postgresql", "mysql")):
        url = _with_driver(url)
        heartbeat, grace = heartbeat_settings()
        return _rdb_storage(url, heartbeat, grace)
    if url.startswith("sqlite"):
        local = _local_file(url)
        if local is not None and not local.parent.is_dir():
            raise SearchError(f"storage: {url}: the folder {local.parent} does not exist (SQLite creates the "
                              f"file, not its folder)")
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # sqlalchemy errors: unwritable, not a database, bad URL
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise SearchError(f"storage: cannot open {redact_url(url)}: {first}") from None
    if url.endswith((".log", ".journal")) or "://" not in url:
        return _journal(os.fspath(Path(url).expanduser()))
    raise SearchError(f"storage: unsupported URL {url!r} (use postgresql://, mysql://, sqlite:/// or a journal file path)")


def _journal(path: str) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    if os.path.isdir(path):
        raise SearchError(f"storage: {path} is a directory; give a journal file path")
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    except OSError as exc:
        raise SearchError(f"storage: cannot open the journal {path}: {exc.strerror or exc}") from None


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
                raise SearchError(f"storage: cannot open {redact_url(url)}: {first}") from None
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


UNCLAIMED_S = 30.0  # a RUNNING trial naming no worker this long was started by a process that died


def worker_id() -> str:
    """This process, as the `worker` user attr of its trials: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None


def reap(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Fail the trials of dead workers so the bucket can go on without them.

    RDB storages with a heartbeat: Optuna's `fail_stale_trials` fails trials silent for the grace
    period, on any host, and its callback re-queues each once. (Optuna runs it before every trial
    too; this is for a worker that is waiting.) File storages: RUNNING trials of dead processes
    on this host (a journal file is for one host).
    """
    if has_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    else:
        fail_orphans(study, storage)


def fail_orphans(study: optuna.Study, storage: optuna.storages.BaseStorage,
                 unclaimed_after_s: float = UNCLAIMED_S) -> None:
    """Mark RUNNING trials of dead processes on this host as failed, so a resumed search goes on.

    File storages have no heartbeat; a process killed mid-trial leaves its trial RUNNING forever.
    (RDB storages with a heartbeat do this themselves, across hosts, and retry the trial.) A process
    killed between Optuna's start of a trial and the objective's first line leaves a RUNNING trial that
    names no worker: it is failed once it has been unclaimed for `unclaimed_after_s` (a live worker
    names itself within milliseconds), or a resumed search would wait for it forever.
    """
    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker, start = worker_of(t), t.datetime_start
        name, _, pid = (worker or "").rpartition(":")
        unclaimed = (worker is None and start is not None
                     and (datetime.now(start.tzinfo) - start).total_seconds() >= unclaimed_after_s)
        if unclaimed or (name == host and pid.isdigit() and not _alive(int(pid))):
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
