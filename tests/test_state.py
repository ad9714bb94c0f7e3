"""The local state store: atomic versioned writes, the lock, refusing what it cannot read."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from provision.errors import LockHeld
from provision.state import STATE_VERSION, LocalStateStore, StateError

from tests.conftest import EXAMPLES, run_cli


@pytest.fixture
def store(tmp_path):
    return LocalStateStore("demo", tmp_path / "state")


def test_new_store_reads_empty_state(store):
    doc = store.read()
    assert doc["version"] == STATE_VERSION and doc["hosts"] == {} and doc["serial"] == 0


def test_write_is_versioned_and_private(store):
    store.update(lambda d: d["hosts"].update({"h": {"pool": "workers"}}))
    store.update(lambda d: d["hosts"].update({"i": {"pool": "workers"}}))
    doc = store.read()
    assert doc["serial"] == 2 and set(doc["hosts"]) == {"h", "i"}
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.state_file).st_mode) == 0o600


def test_crash_between_write_and_rename_leaves_old_state(store):
    store.update(lambda d: d["hosts"].update({"old": {}}))

    class Crash(Exception):
        pass

    def crash(tmp):
        assert tmp.exists()
        raise Crash()

    doc = store.read()
    doc["hosts"] = {"new": {}}
    with pytest.raises(Crash):
        store.write(doc, _before_rename=crash)
    assert set(store.read()["hosts"]) == {"old"}


def test_killed_writer_leaves_old_or_new_state_readable(tmp_path):
    """A process SIGKILLed in the middle of many writes never leaves a torn state.json."""
    state_dir = tmp_path / "state"
    script = textwrap.dedent(f"""
        from provision.state import LocalStateStore
        s = LocalStateStore("demo", {str(state_dir)!r})
        i = 0
        while True:
            i += 1
            s.update(lambda d: d["hosts"].update({{"h": {{"n": i, "pad": "x" * 200000}}}}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    store = LocalStateStore("demo", state_dir)
    while time.monotonic() < deadline and store.read()["serial"] < 3:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    doc = store.read()
    assert doc["serial"] >= 3 and doc["hosts"]["h"]["n"] >= 3


def test_corrupt_state_is_refused_and_kept(store):
    store.update(lambda d: None)
    store.state_file.write_text('{"version": 1, "hosts": {')
    with pytest.raises(StateError, match="corrupt state"):
        store.read()
    with pytest.raises(StateError):
        store.write({"hosts": {}})
    assert store.state_file.read_text() == '{"version": 1, "hosts": {'


def test_newer_state_is_refused_and_kept(store):
    store.update(lambda d: None)
    newer = json.dumps({"version": STATE_VERSION + 1, "cluster": "demo", "hosts": {}})
    store.state_file.write_text(newer)
    with pytest.raises(StateError, match="newer provision"):
        store.read()
    with pytest.raises(StateError):
        store.write({"hosts": {}})
    assert store.state_file.read_text() == newer


def test_lock_in_the_same_process_is_exclusive(store):
    with store.lock("provision up x"):
        other = LocalStateStore("demo", store.root.parent)
        with pytest.raises(LockHeld) as info:
            with other.lock("provision plan x"):
                pass
        assert info.value.holder["command"] == "provision up x"
        assert info.value.holder["pid"] == os.getpid()
    with store.lock("again"):  # released on exit
        pass


def test_second_process_fails_at_once_naming_the_holder(tmp_path):
    """Two processes: the holder keeps the lock; the other fails fast; state is intact."""
    state_dir = tmp_path / "state"
    store = LocalStateStore("demo", state_dir)
    store.update(lambda d: d["hosts"].update({"keep-me": {"pool": "workers"}}))
    before = store.state_file.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from provision.state import LocalStateStore
        s = LocalStateStore("demo", {str(state_dir)!r})
        with s.lock("provision up held-by-test"):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        spec = tmp_path / "demo.yaml"
        spec.write_text((EXAMPLES / "local.yaml").read_text())
        started = time.monotonic()
        result = run_cli("up", spec, "--yes", "--state-dir", state_dir)
        assert time.monotonic() - started < 30
        assert result.code == 1
        assert f"pid {holder.pid}" in result.err and "provision up held-by-test" in result.err
        assert "Traceback" not in result.err
        assert store.state_file.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves no stale lock.
    with store.lock("after"):
        pass


def test_blobs_are_private_and_listed(store):
    store.write_blob("pki/ca.key", b"secret")
    store.write_blob("pki/ca.crt", b"cert", secret=False)
    assert store.read_blob("pki/ca.key") == b"secret"
    assert store.list_blobs("pki") == ["pki/ca.crt", "pki/ca.key"]
    assert stat.S_IMODE(os.stat(store.root / "pki/ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.root / "pki").st_mode) == 0o700
    with pytest.raises(StateError):
        store.write_blob("../escape", b"x")


def test_state_dirs_made_by_provision_are_private(tmp_path):
    store = LocalStateStore("demo", tmp_path / "a" / "b")
    store.update(lambda d: None)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "demo"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory



def test_blob_directories_are_private_and_made_again_when_removed(store):
    store.write_blob("pki/a.key", b"one")
    assert stat.S_IMODE((store.root / "pki").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    (store.root / "pki" / "a.key").unlink()
    (store.root / "pki").rmdir()  # removed behind the store's back, after it made it once
    store.write_blob("pki/b.key", b"two")
    assert store.read_blob("pki/b.key") == b"two"
    assert stat.S_IMODE((store.root / "pki").stat().st_mode) == 0o700
