"""`provision validate SPEC`: the spec contract, then the provider's own checks of its options."""
from __future__ import annotations

from ..api import check_spec_provider
from ..app import App
from ..providers.burst_reach import blocked_lines, burst_network_warnings
from ..providers.pools import pool_providers_needs
from ..spec import SpecError


def run(app: App) -> int:
    try:
        # the spec alone, as `provision.api.validate` checks it: no credentials or machine checks
        spec = check_spec_provider(app.spec, str(app.spec_path))
        own = pool_providers_needs(spec)
        # cloud bursting: a need the rules provision makes certainly refuse is an error, before
        # anything is made (what cannot be checked is said as such below)
        blocked = blocked_lines(own)
        if blocked:
            raise SpecError([f"{app.spec_path}: {line}" for line in blocked])
    except SpecError as err:
        if app.ui.json:
            app.ui.result({"valid": False, "exit_code": 2, "errors": err.lines}, ok=False)
            for line in err.lines:
                app.ui.error(line)
            return 2
        raise
    text = f"{app.spec_path}: OK (cluster {spec.name}, provider {spec.provider.name}, {len(spec.pools)} pools)"
    for entry in own:  # cloud bursting: what the other cloud needs, said before anything is made
        text += f"\npool {entry['pool']} on {entry['provider']}" + (" (burst pool)" if entry["burst"] else "") + ": needs"
        text += "".join(f"\n  - {need}" for need in entry["needs"])
    data: dict = {"valid": True, "provider": spec.provider.name}
    if own:
        data["pool_providers"] = own
    warnings = burst_network_warnings(spec)
    if warnings:
        data["warnings"] = warnings
        text += "".join(f"\nwarning: {line}" for line in warnings)
    app.ui.result(data, text)
    return 0
