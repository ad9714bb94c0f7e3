"""Where the project's non-Python folders are: `provision/_data/<folder>`, in a checkout (links
to the top-level folders) and in an installed wheel (the folders themselves) alike."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "_data"
FOLDERS = ("templates", "ignition", "roles", "vagrant", "examples")


@lru_cache(maxsize=None)
def data_dir(folder: str) -> Path:
    """Path of `templates`, `ignition`, `roles`, `vagrant` or `examples` (links resolved)."""
    path = (DATA / folder).resolve()
    if folder not in FOLDERS or not path.is_dir():
        raise FileNotFoundError(f"provision data folder {folder!r} is missing from this installation")
    return path
