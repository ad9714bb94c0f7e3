"""Phase `render`: render every machine config and store it in the state store as secret
blobs `rendered/<file>` and `rendered/index.json` (the `machines` phase reads them).

A download with no hash from the spec or the catalogue is pinned on first use first (not in
dry-run): fetched once, streamed through sha512, recorded in `state["artifact_pins"]`.
"""
from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any

from .. import artifacts
from ..errors import ActionError
from ..render import INDEX, render_cluster
from .. import faults
from . import RunContext

PREFIX = "rendered/"


def discovery_token(discovery_url: str, size: int, timeout: float = 10.0) -> str:
    """A new token URL from an etcd discovery service (`GET <url>/new?size=N`)."""
    url = f"{discovery_url.rstrip('/')}/new?size={size}"
    import urllib.error  # here, not at the top: a render that downloads nothing pays no HTTP stack
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            token = response.read().decode().strip()
    except (urllib.error.URLError, OSError) as err:
        raise ActionError(f"etcd.discovery_url: cannot get a token from {url}: {err}") from None
    if not token.startswith(("http://", "https://")):
        raise ActionError(f"etcd.discovery_url: {url} answered {token[:80]!r}, not a token URL")
    return token


DOWNLOAD_TIMEOUT = 30.0  # seconds per connect or read
DOWNLOAD_DEADLINE = 900.0  # seconds for a whole download
CHUNK = 1 << 16


def download_sha512(url: str, timeout: float | None = None, deadline: float | None = None) -> str:
    """The sha512 hex digest of the body at `url`, streamed (never held whole in memory).

    `timeout` bounds each connect or read (default DOWNLOAD_TIMEOUT), `deadline` the whole
    download (default DOWNLOAD_DEADLINE). Raises OSError (TimeoutError included),
    urllib.error.URLError or http.client.HTTPException on failure.
    """
    import urllib.request  # here, not at the top: a render that downloads nothing pays no HTTP stack
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    deadline = DOWNLOAD_DEADLINE if deadline is None else deadline
    digest = hashlib.sha512()
    size = 0
    give_up = time.monotonic() + deadline
    with urllib.request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if time.monotonic() > give_up:
                raise TimeoutError(f"not done after {deadline:.0f}s ({size} bytes so far)")
    if size == 0:
        raise OSError("the server answered with an empty body")
    return digest.hexdigest()


def pin_on_first_use(ctx: RunContext, missing: list[artifacts.Unpinned]) -> dict[str, dict[str, str]]:
    """Download each of `missing` once, record its sha512 in `state["artifact_pins"]` and save.

    All downloads happen before state changes: a failure (ActionError naming the artifact and
    URL) leaves state as it was, and a re-run tries again. In dry-run: says so, pins nothing.
    """
    if ctx.dry_run:
        for item in missing:
            ctx.log("render", f"would pin {item.name} {item.version} on first use: download {item.url} "
                              "once and record its sha512 in state")
        return {}
    import http.client  # lazy, as in download_sha512
    import urllib.error
    pinned_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    records = {}
    for item in missing:
        ctx.ui.debug("render", f"downloading {item.url} to pin the {item.name} {item.version} hash")
        try:
            sha512 = download_sha512(item.url)
        except urllib.error.HTTPError as err:
            raise ActionError(f"artifact {item.name} {item.version}: cannot pin its hash on first use: "
                              f"{item.url} answered HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise ActionError(f"artifact {item.name} {item.version}: cannot pin its hash on first use: "
                              f"downloading {item.url} failed: {reason}") from None
        records[item.name] = artifacts.pin_record(item, sha512, pinned_at)
    ctx.state.setdefault(artifacts.PINS, {}).update(records)
    ctx.save()
    for item in missing:
        ctx.log("render", f"{item.name} {item.version}: pinned on first use as sha512-{records[item.name]['sha512']} "
                          f"of {item.url}; check it against the project's published checksums (or "
                          f"`sha512sum` of a trusted copy) and put it in the spec as artifacts.hashes.{item.name}")
    return records


def served_artifacts(ctx: RunContext) -> dict[str, Any] | None:
    """Binaries the provider serves itself, when state has not recorded them yet."""
    try:
        from ..providers import provider_class
        provider = provider_class(ctx.spec.provider.name)(ctx.spec, workdir=ctx.store.workdir)
    except (ImportError, AttributeError):
        return None
    return provider.artifacts()


def artifact_view(state: dict[str, Any], served: dict[str, Any] | None) -> dict[str, Any]:
    """State as the render sees it: with the provider's served binaries when state has none."""
    return dict(state, artifacts=served) if served and not state.get("artifacts") else state


def run(ctx: RunContext) -> dict:
    spec, state = ctx.spec, ctx.state
    served = None if state.get("artifacts") else served_artifacts(ctx)
    missing = artifacts.unpinned(spec, artifact_view(state, served))
    pinned = sorted(pin_on_first_use(ctx, missing)) if missing else []
    if missing and ctx.dry_run:
        ctx.log("render", "would render configs once those hashes are pinned")
        return {"dry_run": True, "would_pin": [m.name for m in missing]}
    artifacts.check(spec, artifact_view(state, served))
    if spec.etcd.discovery == "token" and not (state.get("etcd") or {}).get("discovery_token_url"):
        if ctx.dry_run:
            ctx.log("render", f"would get an etcd discovery token from {spec.etcd.discovery_url}")
            return {"dry_run": True}
        assert spec.etcd.discovery_url, "spec.load requires etcd.discovery_url with discovery: token"
        token = discovery_token(spec.etcd.discovery_url, spec.etcd.count)
        state.setdefault("etcd", {})["discovery_token_url"] = token
        ctx.save()
        ctx.log("render", "got an etcd discovery token")
    hosts = ctx.plan().desired
    if ctx.dry_run and ctx.store.read_blob("pki/ca.crt") is None:
        ctx.log("render", f"would render configs for {len(hosts)} hosts once the pki phase has run")
        return {"dry_run": True}
    rendered = render_cluster(spec, artifact_view(state, served), ctx.store, hosts)
    names = sorted(rendered.files)
    if ctx.dry_run:
        ctx.log("render", f"would store {len(names)} configs for {len(hosts)} hosts: {', '.join(names)}")
        return {"dry_run": True, "configs": names}
    changed = []
    for done, (name, data) in enumerate(sorted(rendered.files.items()) + [(INDEX, rendered.index_bytes())], 1):
        if ctx.store.read_blob(PREFIX + name) != data:
            ctx.store.write_blob(PREFIX + name, data, secret=True)
            changed.append(name)
        if done == 1:
            faults.point(faults.FIRST_WRITE)
        faults.hosts_done(done, len(rendered.files) + 1)
    for stale in ctx.store.list_blobs(PREFIX):
        if stale[len(PREFIX):] not in rendered.files and stale != PREFIX + INDEX:
            ctx.store.delete_blob(stale)
    ctx.log("render", f"{len(names)} configs for {len(hosts)} hosts; {len(changed)} changed")
    result: dict[str, Any] = {"configs": names, "changed": changed}
    if pinned:
        result["pinned"] = pinned
    return result
