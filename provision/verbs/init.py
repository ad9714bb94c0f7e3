"""`provision init [--provider NAME]`: print a commented starter spec."""
from __future__ import annotations

from ..spec.model import NAME_RE
from ..errors import UserError
from ..spec.starter import starter_spec


def run(app, provider: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"--name: must match ^[a-z][a-z0-9-]{{0,30}}$ (got {name!r})")
    text = starter_spec(provider, name)
    if app.ui.json:
        app.ui.result({"provider": provider, "spec": text})
    else:
        print(text, end="")
