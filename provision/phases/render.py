"""Phase `render`: render every machine config and store it in the state store as secret
blobs `rendered/<file>` and `rendered/index.json` (the `machines` phase reads them)."""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from .. import artifacts
from ..errors import ActionError
from ..plan import plan
from ..render import INDEX, render_cluster
from . import RunContext

PREFIX = "rendered/"


def discovery_token(discovery_url: str, size: int, timeout: float = 10.0) -> str:
    """A new token URL from an etcd discovery service (`GET <url>/new?size=N`)."""
    url = f"{discovery_url.rstrip('/')}/new?size={size}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            token = response.read().decode().strip()
    except (urllib.error.URLError, OSError) as err:
        raise ActionError(f"etcd.discovery_url: cannot get a token from {url}: {err}") from None
    if not token.startswith(("http://", "https://")):
        raise ActionError(f"etcd.discovery_url: {url} answered {token[:80]!r}, not a token URL")
    return token


def served_artifacts(ctx: RunContext) -> dict[str, Any] | None:
    """Binaries the provider serves itself, when state has not recorded them yet."""
    try:
        from ..providers import provider_class
        provider = provider_class(ctx.spec.provider.name)(ctx.spec, workdir=ctx.store.workdir)
    except (ImportError, AttributeError):
        return None
    return provider.artifacts()


def run(ctx: RunContext) -> dict:
    spec, state = ctx.spec, ctx.state
    view = state
    if not state.get("artifacts"):
        served = served_artifacts(ctx)
        if served:
            view = dict(state, artifacts=served)
    artifacts.check(spec, view)
    if spec.etcd.discovery == "token" and not (state.get("etcd") or {}).get("discovery_token_url"):
        if ctx.dry_run:
            ctx.log("render", f"would get an etcd discovery token from {spec.etcd.discovery_url}")
            return {"dry_run": True}
        token = discovery_token(spec.etcd.discovery_url, spec.etcd.count)
        state.setdefault("etcd", {})["discovery_token_url"] = token
        ctx.save()
        ctx.log("render", "got an etcd discovery token")
    hosts = plan(spec, state).desired
    if ctx.dry_run and ctx.store.read_blob("pki/ca.crt") is None:
        ctx.log("render", f"would render configs for {len(hosts)} hosts once the pki phase has run")
        return {"dry_run": True}
    rendered = render_cluster(spec, view, ctx.store, hosts)
    names = sorted(rendered.files)
    if ctx.dry_run:
        ctx.log("render", f"would store {len(names)} configs for {len(hosts)} hosts: {', '.join(names)}")
        return {"dry_run": True, "configs": names}
    changed = []
    for name, data in sorted(rendered.files.items()) + [(INDEX, rendered.index_bytes())]:
        if ctx.store.read_blob(PREFIX + name) != data:
            ctx.store.write_blob(PREFIX + name, data, secret=True)
            changed.append(name)
    for stale in ctx.store.list_blobs(PREFIX):
        if stale[len(PREFIX):] not in rendered.files and stale != PREFIX + INDEX:
            ctx.store.delete_blob(stale)
    ctx.log("render", f"{len(names)} configs for {len(hosts)} hosts; {len(changed)} changed")
    return {"configs": names, "changed": changed}
