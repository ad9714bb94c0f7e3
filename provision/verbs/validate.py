"""`provision validate SPEC`: the spec contract, then the provider's own checks of its options."""
from __future__ import annotations

from ..app import App
from ..errors import UserError
from ..spec import SpecError
from .preflight import check_provider


def run(app: App) -> int:
    try:
        spec = app.spec
        try:
            check_provider(spec, preflight=False)  # the spec alone: no credentials or machine checks
        except SpecError:
            raise
        except UserError as err:  # name the file, as the spec's own problems do
            raise SpecError([f"{app.spec_path}: {line}" for line in err.lines]) from None
    except SpecError as err:
        if app.ui.json:
            app.ui.result({"valid": False, "exit_code": 2, "errors": err.lines}, ok=False)
            for line in err.lines:
                app.ui.error(line)
            return 2
        raise
    from ..providers.pools import pool_providers_needs
    own = pool_providers_needs(spec)
    text = f"{app.spec_path}: OK (cluster {spec.name}, provider {spec.provider.name}, {len(spec.pools)} pools)"
    for entry in own:  # cloud bursting: what the other cloud needs, said before anything is made
        text += f"\npool {entry['pool']} on {entry['provider']}" + (" (burst pool)" if entry["burst"] else "") + ": needs"
        text += "".join(f"\n  - {need}" for need in entry["needs"])
    data = {"valid": True, "provider": spec.provider.name}
    if own:
        data["pool_providers"] = own
    app.ui.result(data, text)
    return 0
