"""Which running hosts' configs, rendered now, differ from the one they booted with (their boot
record's sha256), for `plan`: after `pki rotate` no spec field changed, yet `up` updates those
hosts in place (its rollout phase compares the configs the render phase just stored; `plan`
renders them itself, in memory, once per distinct config: a pool's workers share one)."""
from __future__ import annotations

from typing import Any, Mapping

from . import rollout
from .changes import BOOT, config_digest
from .errors import ActionError, UserError
from .plan import Plan
from .spec import Spec
from .state import MissingBlob, StateStore


def configs_changed(spec: Spec, state: Mapping[str, Any], store: StateStore, current: Plan) -> list[str]:
    """Kept hosts whose config as it renders now differs from their recorded one. Nothing when no
    kept host records a config, or when the configs cannot render yet (no PKI, say: `up` renders
    them first, and its rollout then decides)."""
    hosts = state.get("hosts") or {}
    recorded = {h.name: ((hosts.get(h.name) or {}).get(BOOT) or {}).get("config_sha256") for h in current.keep}
    if not any(recorded.values()):
        return []
    from .render import render_cluster
    view = state
    try:
        if not state.get("artifacts"):  # as the render phase sees state: binaries the provider serves
            from .providers import get_provider
            served = get_provider(spec, store.workdir).artifacts()
            view = dict(state, artifacts=served) if served else state
        rendered = render_cluster(spec, view, store, current.desired)
    except (ActionError, UserError, MissingBlob, OSError):
        return []
    now = {h.name: config_digest(rendered.config_for(h.name)) for h in current.keep if recorded.get(h.name)}
    return rollout.config_changed(recorded, now)
