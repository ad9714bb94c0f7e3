"""Where the project's non-Python folders are: the source checkout, or inside the wheel."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def data_dir(folder: str) -> Path:
    """Path of `templates`, `ignition`, `roles`, `vagrant` or `examples`."""
    for candidate in (_PACKAGE.parent / folder, _PACKAGE / "_data" / folder):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"provision data folder {folder!r} is missing from this installation")
