"""Output files: checked before any work, written atomically under unique temporary names, locked."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

from zsad._errors import SpecError


def check_writable(path: str | os.PathLike, option: str) -> Path:
    """Raises a one-line :class:`SpecError` unless a file can be written at ``path``.

    The folder must exist (it is not created) and take a new file: a temporary
    file is created beside ``path`` and removed (permission bits say nothing when
    running as root, or on a read-only file system). ``path`` itself may exist,
    but not as a folder. ``option`` names the option in the message.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SpecError(f"{path}: {option}: expected a file; got a folder")
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise SpecError(f"{path}: {option}: expected a file in an existing folder; got {folder}: {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise SpecError(f"{path}: {option}: expected a folder that takes new files; got {folder}: "
                        f"{err.strerror or err}") from None
    return path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes ``data`` to a temporary file with a unique name beside ``path``, then renames it over
    ``path``: readers see the old file or the new one, never a part, and two writers never share a
    temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def unique_temp(path: str | os.PathLike) -> Path:
    """A fresh, empty file beside ``path`` with a unique name (for writers that need a path, not a handle);
    the caller renames it over ``path`` or removes it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    return Path(tmp)


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


class FileLock:
    """An exclusive lock on ``FILE.lock`` beside ``FILE``, held until :meth:`release` (or process exit).

    A sidecar, not the file itself: atomic replacement gives the file a new inode, and a lock on
    the old one would no longer exclude anybody. :meth:`acquire` never waits: a second holder gets
    a one-line :class:`SpecError` at once. The lock file is left in place (removing it would let
    a third process lock a new inode while the second still holds the old one).
    """

    def __init__(self, path: str | os.PathLike, option: str = "--out"):
        self.path = Path(path)
        self.lock = lock_path(self.path)
        self.option = option
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpecError(f"{self.path}: {self.option}: expected a results file no other run is using; got "
                                f"one locked by another run ({self.lock.name}); wait for it, or use another "
                                f"{self.option}") from None
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
