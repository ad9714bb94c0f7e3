"""`provision init [--provider NAME]`: print a commented starter spec."""
from __future__ import annotations

from ..app import App
from ..errors import UserError
from ..spec.model import NAME_RE
from ..spec.schema import name_problem
from ..spec.starter import starter_spec


def run(app: App, provider: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"--name: {name_problem(30, name)}")
    text = starter_spec(provider, name)
    app.ui.cluster = name
    if app.ui.json:
        app.ui.result({"provider": provider, "spec": text})
    else:
        print(text, end="")
