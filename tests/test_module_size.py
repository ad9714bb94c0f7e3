"""No module of the package grows past 400 lines: one concern per module, each small enough to
read whole (issue 14's rule, kept by this test rather than by memory)."""
from __future__ import annotations

from pathlib import Path

import provision

LIMIT = 400


def test_no_module_of_the_package_is_over_the_limit():
    root = Path(provision.__file__).resolve().parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert sizes, "no module found"
    over = {name: n for name, n in sizes.items() if n > LIMIT}
    assert not over, f"modules over {LIMIT} lines: {over}"
