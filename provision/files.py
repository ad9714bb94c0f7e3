"""Files written safely: directories only their owner enters (0700), and files replaced
atomically with their mode set before any byte is written (a crash leaves the old or the new
file, never a half one, and a secret is never readable by others even for a moment).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def secure_makedirs(path: Path) -> None:
    """Create `path` and the parents it lacks with mode 0700 (existing parents keep theirs)."""
    missing = []
    cursor = Path(path)
    while not cursor.exists():
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):  # mkdir's mode does not apply to parents= ones
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    os.chmod(path, 0o700)


def write_file_atomic(path: Path, data: bytes, mode: int = 0o600,
                      before_rename: Callable[[Path], None] | None = None) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if before_rename is not None:
        before_rename(tmp)  # a test hook: crash here must leave the old file intact
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
