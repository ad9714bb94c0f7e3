"""Files written safely: directories only their owner enters (0700), and files replaced
atomically with their mode set before any byte is written (a crash leaves the old or the new
file, never a half one, and a secret is never readable by others even for a moment).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

# New files written inside `batched_sync()`: made durable together when it ends (None outside one).
_batch: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("provision_files_batch", default=None)
_SYNC_THREADS = 8  # concurrent fsyncs share the filesystem's journal commits


def secure_makedirs(path: Path, made: set[Path] | None = None) -> None:
    """Create `path` and the parents it lacks with mode 0700 (existing parents keep theirs).

    `made`: the caller's record of directories this made before, which are only checked to still
    be there (not made 0700 again: a chmod on every write of a blob is a metadata write)."""
    if made is not None and path in made and path.is_dir():
        return
    missing = []
    cursor = Path(path)
    while not cursor.exists():
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):  # mkdir's mode does not apply to parents= ones
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    os.chmod(path, 0o700)
    if made is not None:
        made.add(path)


def write_file_atomic(path: Path, data: bytes, mode: int = 0o600,
                      before_rename: Callable[[Path], None] | None = None) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file.

    Inside `batched_sync()`, a file that did not exist yet is synced at the batch's end instead
    (a power loss before then leaves it missing or empty: nothing that existed is lost); a file
    that replaces another is always synced before the rename."""
    batch = _batch.get()
    deferred = batch is not None and before_rename is None and not path.exists()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if not deferred:
            os.fsync(fd)
    finally:
        os.close(fd)
    if before_rename is not None:
        before_rename(tmp)  # a test hook: crash here must leave the old file intact
    os.replace(tmp, path)
    if deferred and batch is not None:
        batch.append(path)
        return
    _fsync_path(path.parent)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_if_there(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # written, then removed inside the batch
        _fsync_path(path)


def _fsync_all(paths: list[Path]) -> None:
    """fsync every path, `_SYNC_THREADS` at a time (plain threads: concurrent.futures would
    import logging into every command's start-up). The first error is raised after all ran."""
    errors: list[OSError] = []

    def work(share: list[Path]) -> None:
        for path in share:
            try:
                _fsync_if_there(path)
            except OSError as err:
                errors.append(err)

    threads = [threading.Thread(target=work, args=(paths[i::_SYNC_THREADS],))
               for i in range(min(_SYNC_THREADS, len(paths)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def batched_sync() -> Iterator[None]:
    """Make the new files written inside durable together when the block ends: their fsyncs run
    concurrently (one journal commit serves many), then each directory's once. Creating a
    cluster's PKI writes some fifty new files; one by one, their fsyncs were most of its time
    (P1, issue 11). On an exception the files written so far are synced too."""
    if _batch.get() is not None:  # nested: the outer block syncs
        yield
        return
    written: list[Path] = []
    token = _batch.set(written)
    try:
        yield
    finally:
        _batch.reset(token)
        if written:
            _fsync_all(written)
            for directory in sorted({p.parent for p in written}):
                _fsync_path(directory)
