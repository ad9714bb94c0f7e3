"""Golden files: what one small spec renders to, so a reviewer sees the output, and any
change to it shows up in review. The PKI is fixed test material (tests/golden/small/pki/,
made for this test only, never used by a cluster), so the output is stable.

Regenerate after an intended change: PROVISION_UPDATE_GOLDEN=1 pytest tests/test_render_golden.py
"""
from __future__ import annotations

import base64
import difflib
import json
import os
import shutil
from pathlib import Path

from provision import pki
from provision.plan import plan
from provision.render import render_cluster
from provision.spec import load_spec
from provision.state import open_store
from tests.helpers_render import SMALL_SPEC, served_artifacts, write_spec

GOLDEN = Path(__file__).resolve().parent / "golden" / "small"
UPDATE = os.environ.get("PROVISION_UPDATE_GOLDEN") in ("1", "out")
# "out": rewrite the rendered files only, keeping the fixed PKI (a template change)
UPDATE_PKI = os.environ.get("PROVISION_UPDATE_GOLDEN") == "1"


def expanded(config: bytes) -> bytes:
    """A reviewer's view of an Ignition config: every file decoded (PEM blocks abbreviated),
    every unit, the users."""
    doc = json.loads(config)
    lines = [f"# users: {[u['name'] for u in doc['passwd']['users']]}"]
    for d in doc["storage"]["directories"]:
        lines.append(f"## directory {d['path']} {d['mode']:04o}")
    for f in doc["storage"]["files"]:
        source = f["contents"]["source"]
        lines.append(f"## file {f['path']} {f['mode']:04o}")
        if not source.startswith("data:"):
            lines.append(f"(fetched from {source}, {f['contents']['verification']['hash'][:20]}...)")
            continue
        text = base64.b64decode(source.split(",", 1)[1]).decode(errors="replace")
        if "-----BEGIN" in text:
            text = f"(PEM, {len(text)} bytes: {text.splitlines()[0]})"
        lines.append(text.rstrip("\n"))
    for u in doc["systemd"]["units"]:
        lines.append(f"## unit {u['name']} enabled={u['enabled']}")
        lines.append(u["contents"].rstrip("\n"))
    return ("\n".join(lines) + "\n").encode()


def _render(tmp_path: Path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = load_spec(write_spec(tmp_path, SMALL_SPEC))
    store = open_store(spec, tmp_path / "state")
    state = store.read()
    state["artifacts"] = served_artifacts("http://10.77.0.1:8080")
    hosts = plan(spec, state).desired
    if UPDATE_PKI:
        shutil.rmtree(GOLDEN / "pki", ignore_errors=True)
        pki.ensure_pki(spec, store, hosts)
        for name in store.list_blobs("pki/"):
            target = GOLDEN / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.read_blob(name))
    else:
        for path in sorted((GOLDEN / "pki").rglob("*")):
            if path.is_file():
                store.write_blob(str(path.relative_to(GOLDEN)), path.read_bytes())
    return render_cluster(spec, state, store, hosts)


def test_small_spec_matches_the_golden_files(tmp_path):
    rendered = _render(tmp_path)
    outputs = dict(rendered.files, **{"index.json": rendered.index_bytes()})
    outputs.update({f"{name}.txt": expanded(data) for name, data in rendered.files.items()})
    out_dir = GOLDEN / "out"
    if UPDATE:
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        for name, data in outputs.items():
            (out_dir / name).write_bytes(data)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(outputs)
    for name, data in sorted(outputs.items()):
        expected = (out_dir / name).read_bytes()
        if data != expected:
            diff = "".join(difflib.unified_diff(expected.decode().splitlines(True), data.decode().splitlines(True),
                                                f"golden/{name}", f"rendered/{name}", n=2))
            raise AssertionError(f"{name} differs from the golden file (PROVISION_UPDATE_GOLDEN=1 to accept):\n"
                                 + diff[:4000])


def test_golden_pki_is_complete_and_rendering_it_twice_is_identical(tmp_path):
    if UPDATE:
        return  # the golden PKI was just made again by the test above
    first = _render(tmp_path / "a")
    second = _render(tmp_path / "b")
    assert first.files == second.files
    assert (GOLDEN / "pki" / "ca.crt").exists() and (GOLDEN / "pki" / "ssh" / "id_ed25519.pub").exists()
