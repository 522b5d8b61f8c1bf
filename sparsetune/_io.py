"""Small file and text helpers with one implementation each: atomic writes, URL redaction, hashing.

Nothing here imports anything heavy; every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import SparsetuneError

__all__ = ["atomic_write", "canonical_sha256", "check_ours", "check_writable", "is_workload_file",
           "redact_url", "replacing", "splice_block"]


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], error: type[SparsetuneError] = SparsetuneError,
              suffix: str = ".tmp", make_parents: bool = False) -> Iterator[Path]:
    """A temp path beside `path` to write; on success it is fsynced and renamed over `path` (atomic on
    POSIX and Windows), on failure removed. A crash leaves the old file or the new one, never half.

    Every file sparsetune writes goes through here (profiles, tables, plots, workloads, deploy configs).
    `make_parents`: missing parent folders are made (else a missing folder is an error). Whatever writes
    the temp file creates it, so its mode is 0o666 less
    the user's umask, like `open()`. An OSError becomes `error` with the path and the reason.
    """
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if make_parents:
            folder.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as fh:  # durable content before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise error(f"{path}: cannot write: {exc.strerror or exc}") from exc
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not possible everywhere
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write(path: str | os.PathLike[str], text: str,
                 error: type[SparsetuneError] = SparsetuneError, make_parents: bool = False) -> Path:
    """Write `text` (UTF-8, ``\\n`` line ends) to `path` atomically; see `replacing`."""
    path = Path(path)
    with replacing(path, error, make_parents=make_parents) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    return path


def check_writable(path: str | os.PathLike[str], error: type[SparsetuneError] = SparsetuneError,
                   what: str = "out") -> Path:
    """Fail now, before minutes of work, when `path` could not be written later; create and leave nothing.

    Refused: a directory at `path`, a file where a parent folder should be, a folder where a file
    cannot be created (read-only filesystem, no permission). The nearest existing folder gets a
    temporary file, removed at once; missing folders are made only when the result is written.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise error(f"{what}: {path} is a directory; give a file path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise error(f"{what}: cannot write {path}: {folder} is not a folder")
    probe = folder / f".sparsetune-write-check.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{what}: cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_ours(path: str | os.PathLike[str], kind: str, is_ours: Callable[[Path], bool], force: bool,
               error: type[SparsetuneError] = SparsetuneError) -> None:
    """THE overwrite rule: an existing file at `path` is replaced only when it is one of ours of the same `kind`
    (`is_ours`), or with `force`; anything else (a README, another tool's file) is refused with `error`."""
    p = Path(path).expanduser()
    if force or not p.exists() or (p.is_file() and is_ours(p)):
        return
    raise error(f"out: {p} exists and is not a sparsetune {kind}; choose another --out, or pass --force to "
                "overwrite it")


def is_workload_file(path: Path) -> bool:
    """A JSONL file whose every line is a sample object (a prompt, as `workload synth` writes)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return all(isinstance(row := json.loads(line), dict) and "prompt" in row for line in lines)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (``postgresql://me:***@host/db``); others unchanged."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def canonical_sha256(data: Mapping[str, Any]) -> str:
    """sha256 of `data` as canonical JSON (sorted keys, no spaces), so key order and whitespace do not matter."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def splice_block(path: str | os.PathLike[str], name: str, body: str, owner: str = "a script", header: str = "",
                 before: str | None = None) -> Path:
    """Replace (or add) the block between this name's markers in a text file, atomically.

    The file is re-read first, so sections others write are kept exactly. A new block goes above the
    line `before` when the file has it, else at the end; a missing file starts as `header`.
    """
    path = Path(path)
    begin, end = f"<!-- {name} begin (written by {owner}) -->", f"<!-- {name} end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.is_file() else header
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    elif before is not None and f"\n{before}" in text:  # first time: insert above this line
        head, tail = text.split(f"\n{before}", 1)
        text = head.rstrip("\n") + "\n\n" + block + "\n\n" + before + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    return atomic_write(path, text)
