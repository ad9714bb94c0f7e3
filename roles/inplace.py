"""Role inplace: a running host gets the files of its newly rendered config that differ from
what it has (digests compared first, so a re-run writes nothing). Reports the paths it wrote
under `written`; provision.inplace restarts the units they belong to."""
from __future__ import annotations

import base64
import hashlib
import io
import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import Sha256File
from pyinfra.operations import server
from pyinfra.operations import files as file_ops


class Sha512File(FactBase):
    """sha512 hex digest of a file (None when absent): what Ignition's verification hashes use."""

    def command(self, path: str) -> str:
        return f"sha512sum {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]):
        return output[0].split()[0] if output and output[0].strip() else None


@deploy("in-place update")
def apply(report: dict) -> None:
    entry = report.setdefault(host.name, {"missing": [], "units": {}, "notes": []})
    payload = (host.data.get("inplace") or {}).get(host.name) or {}
    written = []
    for path, item in sorted((payload.get("files") or {}).items()):
        data = base64.b64decode(item["data"])
        if host.get_fact(Sha256File, path=path, _sudo=True) == hashlib.sha256(data).hexdigest():
            continue
        file_ops.put(name=f"write {path}", src=io.BytesIO(data), dest=path, mode=f"{item['mode']:o}",
                     user="root", group="root", create_remote_dir=True, _sudo=True)
        written.append(path)
    for path, item in sorted((payload.get("downloads") or {}).items()):
        want = item["hash"].split("-", 1)[-1]
        if host.get_fact(Sha512File, path=path, _sudo=True) == want:
            continue
        tmp = shlex.quote(f"{path}.provision-new")
        server.shell(name=f"download {path}", commands=[
            f"curl -fsSL --retry 3 -o {tmp} {shlex.quote(item['url'])}",
            f"echo {shlex.quote(want)}'  '{tmp} | sha512sum -c --quiet",
            f"chmod {item['mode']:o} {tmp}", f"mv -f {tmp} {shlex.quote(path)}"], _sudo=True)
        written.append(path)
    entry["written"] = written
