"""Writing files safely, shared by the commands that write (golden export, training
checkpoints, reproduce --out): an output directory proved writable before any work, and
atomic writes (a crash leaves the previous file or none, never a partial one)."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["OutputDirError", "prepare_output_dir", "write_atomic", "sha256_file"]


class OutputDirError(ValueError):
    """An output directory that cannot be used: ``path`` and the ``problem``, in words."""

    def __init__(self, path: object, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


def prepare_output_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (and its parents) if needed and prove, with a probe file, that a
    file can be written into it. Raises ``OutputDirError`` for an empty path, a path that is
    a file or lies under one, and a directory that cannot be written."""
    if str(directory) == "":
        raise OutputDirError("''", "must be a directory path, got ''")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise OutputDirError(d, "exists and is not a directory")
    blocker = next((p for p in d.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputDirError(d, f"cannot be created: {blocker} is a file, not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".primal-np-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirError(d, f"is not writable: {exc.strerror or exc}") from None
    return d


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # a platform without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, as hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(
    d: Path, name: str, write: Callable[[IO[bytes]], object], *, tmp_prefix: str = ".tmp-"
) -> str:
    """``write(file)`` into a temporary file of directory ``d``, fsync it, rename it to
    ``name`` (formatted with ``sha`` = the first 16 hex digits of the content's SHA-256,
    if it has a ``{sha}`` field) and fsync the directory. Returns the content's SHA-256.
    The temporary file is removed if anything fails; the previous file of that name, if
    any, stays until the rename replaces it whole. Temporary files are named
    ``<tmp_prefix><random>.tmp``, so a caller can clear the leftovers of a crash."""
    tmp = d / f"{tmp_prefix}{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, d / name.format(sha=digest[:16]))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(d)
    return digest
