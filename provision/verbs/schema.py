"""`provision schema`: print the spec's JSON Schema (for editors and other tools)."""
from __future__ import annotations

import json

from ..app import App
from ..spec.json_schema import spec_json_schema


def run(app: App) -> None:
    schema = spec_json_schema()
    if app.ui.json:
        app.ui.result({"schema": schema})
    else:
        print(json.dumps(schema, indent=2))
