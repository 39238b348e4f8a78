"""Filesystem helpers shared by everything that writes outputs atomically: unique temporary
siblings, the lock that claims a run directory, and the clean-up of temporaries a killed
process left behind."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path

from polyrec.errors import DataError

LOCK = ".polyrec.lock"
"""The file that marks a run directory as taken by a live process (pid and host inside)."""
TMP_MARK = ".tmp"


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target`` (same filesystem): a former ``target`` is
    moved aside first and removed only once the new one is in place."""
    if target.exists():
        old = target.parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden name next to ``path``, unique to this process and call
    (``.<name>.<pid>-<random>.tmp<suffix>``): two writers never share a temporary."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_MARK}{suffix}")


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries :func:`temporary_sibling` names in ``folder`` (left by a process
    killed mid-write); returns what was removed. Only for a folder this process has claimed."""
    removed = []
    for p in folder.glob(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def make_parent(path: Path) -> None:
    """Create the missing parent folders of an output path (``--out runs/x`` on a fresh clone)."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"cannot create {str(path)!r}: {str(parent)!r} is not a folder") from None
    except PermissionError:
        raise DataError(
            f"cannot create {str(path)!r}: no permission to write {str(parent)!r}"
        ) from None


def _holder(lock: Path) -> tuple[int, str] | None:
    try:
        pid_s, host = lock.read_text().split()[:2]
        return int(pid_s), host
    except (OSError, ValueError):
        return None  # unreadable or half-written: treated as stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_dir(path: Path, what: str = "run directory") -> Path:
    """Create ``path`` if needed and take its lock atomically (``O_CREAT | O_EXCL``); returns the
    lock file, which :func:`release_dir` removes. A lock left by a process that no longer runs
    (killed) is taken over; one held by a live process is a :class:`DataError`."""
    make_parent(path)
    path.mkdir(exist_ok=True)
    lock = path / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and (holder[1] != socket.gethostname() or _alive(holder[0])):
                raise DataError(
                    f"{what} {str(path)!r} is in use by another polyrec process (pid {holder[0]} "
                    f"on {holder[1]}); wait for it to finish or choose another --out"
                ) from None
            lock.unlink(missing_ok=True)  # a killed process's lock: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return lock
    raise DataError(f"{what} {str(path)!r} is being claimed by another polyrec process")


def release_dir(lock: Path) -> None:
    """Remove a lock :func:`claim_dir` took (if it is still this process's)."""
    holder = _holder(lock)
    if holder is not None and holder[0] == os.getpid():
        lock.unlink(missing_ok=True)


__all__ = [
    "LOCK",
    "claim_dir",
    "make_parent",
    "release_dir",
    "remove_temporaries",
    "replace_dir",
    "temporary_sibling",
]
