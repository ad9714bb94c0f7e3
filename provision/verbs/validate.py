"""`provision validate SPEC`."""
from __future__ import annotations

from ..spec import SpecError


def run(app) -> int:
    try:
        spec = app.spec
    except SpecError as err:
        if app.ui.json:
            app.ui.result({"valid": False, "errors": err.lines})
            for line in err.lines:
                app.ui.error(line)
            return 2
        raise
    app.ui.result({"valid": True, "name": spec.name, "provider": spec.provider.name},
                  f"{app.spec_path}: OK (cluster {spec.name}, provider {spec.provider.name}, "
                  f"{len(spec.pools)} pools)")
    return 0
