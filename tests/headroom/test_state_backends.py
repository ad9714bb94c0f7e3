"""One store contract for the three state backends: local (a directory), etcd (a real etcd
over TLS, python-etcd) and s3 (moto's S3 server through boto3)."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from provision.errors import LockHeld
from provision.spec import parse_spec
from provision.state import STATE_VERSION, StateError, open_store


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_spec(name: str, state: dict):
    return parse_spec({"name": name, "provider": {"name": "local"}, "etcd": {"count": 1},
                       "pools": [{"name": "masters", "role": "master", "count": 1}], "state": state})


class Backend:
    """A store factory plus a way to plant raw bytes where the state document lives."""

    def __init__(self, name, spec, state_dir, plant):
        self.name, self.spec, self.state_dir, self.plant = name, spec, state_dir, plant

    def store(self):
        return open_store(self.spec, self.state_dir)


@pytest.fixture(params=["local", "etcd", "s3"])
def backend(request, tmp_path, monkeypatch):
    cluster = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "local":
        spec = make_spec(cluster, {"backend": "local"})

        def plant(raw: bytes):
            (tmp_path / cluster).mkdir(mode=0o700, exist_ok=True)
            (tmp_path / cluster / "state.json").write_bytes(raw)
        return Backend("local", spec, tmp_path, plant)
    if request.param == "etcd":
        server = request.getfixturevalue("etcd_server")
        monkeypatch.setenv("ETCDCTL_CACERT", str(server.client_tls.ca))
        monkeypatch.setenv("ETCDCTL_CERT", str(server.client_tls.cert))
        monkeypatch.setenv("ETCDCTL_KEY", str(server.client_tls.key))
        spec = make_spec(cluster, {"backend": "etcd", "endpoints": [server.endpoint], "prefix": "ptest"})

        def plant(raw: bytes):
            server.client().write(f"/ptest/{cluster}/state", raw.decode())
        return Backend("etcd", spec, tmp_path, plant)
    endpoint = request.getfixturevalue("s3_server")
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    import boto3
    bucket = f"state-{cluster}"
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    spec = make_spec(cluster, {"backend": "s3", "bucket": bucket, "region": "us-east-1", "prefix": "ptest"})

    def plant(raw: bytes):
        client.put_object(Bucket=bucket, Key=f"ptest/{cluster}/state.json", Body=raw)
    return Backend("s3", spec, tmp_path, plant)


pytestmark = pytest.mark.slow


def test_empty_then_versioned_writes(backend):
    store = backend.store()
    assert store.backend == backend.name
    doc = store.read()
    assert doc["serial"] == 0 and doc["version"] == STATE_VERSION and doc["hosts"] == {}
    store.update(lambda d: d["hosts"].update({"a": {"pool": "workers"}}))
    store.update(lambda d: d["hosts"].update({"b": {"pool": "workers"}}))
    again = backend.store().read()  # a fresh client sees it: the state is shared
    assert again["serial"] == 2 and set(again["hosts"]) == {"a", "b"} and again["cluster"] == backend.spec.name


def test_lock_held_names_the_holder_and_is_released(backend):
    first, second = backend.store(), backend.store()
    with first.lock("provision headroom demo.yaml --once"):
        with pytest.raises(LockHeld) as info:
            with second.lock("provision up demo.yaml"):
                pass
        assert "provision headroom demo.yaml --once" in str(info.value)
        assert info.value.holder.get("command") == "provision headroom demo.yaml --once"
        assert info.value.exit_code == 1
    with second.lock("provision up demo.yaml"):
        pass


def test_concurrent_lockers_exactly_one_wins(backend):
    stores = [backend.store() for _ in range(4)]
    wins, held, barrier = [], [], threading.Barrier(4)
    release = threading.Event()

    def attempt(store):
        barrier.wait()
        try:
            with store.lock("race"):
                wins.append(store)
                release.wait(60)
        except LockHeld:
            held.append(store)

    threads = [threading.Thread(target=attempt, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    # the winner holds until every one of the four has an answer (a loser that asked only
    # after an early release would win too)
    deadline = time.monotonic() + 30
    while len(wins) + len(held) < 4 and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    release.set()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(held) == 3


def test_blobs(backend):
    store = backend.store()
    assert store.read_blob("pki/ca.key") is None and store.list_blobs() == []
    store.write_blob("pki/ca.key", b"\x00secret\xff", secret=True)
    store.write_blob("pki/ca.crt", b"cert", secret=False)
    store.write_blob("kubeconfig", b"kc")
    other = backend.store()
    assert other.read_blob("pki/ca.key") == b"\x00secret\xff"
    assert other.list_blobs() == ["kubeconfig", "pki/ca.crt", "pki/ca.key"]
    assert other.list_blobs("pki/") == ["pki/ca.crt", "pki/ca.key"]
    path = other.blob_path("pki/ca.key")
    assert path.read_bytes() == b"\x00secret\xff" and (path.stat().st_mode & 0o077) == 0
    other.delete_blob("pki/ca.key")
    other.delete_blob("pki/ca.key")  # absent: fine
    assert store.read_blob("pki/ca.key") is None
    with pytest.raises(StateError, match="bad blob name"):
        store.write_blob("../escape", b"x")
    with pytest.raises(StateError, match="no missing"):
        store.blob_path("missing")


@pytest.mark.parametrize("raw, message", [
    (b'{"version": 1, "hosts": {', "corrupt"),
    (b'["not", "a", "document"]', "not a provision state document"),
    (json.dumps({"version": STATE_VERSION + 1, "hosts": {}}).encode(), "newer provision"),
])
def test_corrupt_or_newer_document_is_refused_and_kept(backend, raw, message):
    backend.plant(raw)
    store = backend.store()
    with pytest.raises(StateError, match=message):
        store.read()
    with pytest.raises(StateError, match=message):
        store.write({"hosts": {"x": {}}})
    backend.plant(raw)  # unchanged: a re-read still refuses it the same way
    with pytest.raises(StateError, match=message):
        backend.store().read()


# compare-and-swap is for the shared backends; local writers serialise on the lock
@pytest.mark.parametrize("backend", ["etcd", "s3"], indirect=True)
def test_a_writer_that_read_an_older_document_does_not_overwrite(backend):
    a, b = backend.store(), backend.store()
    doc_a, doc_b = a.read(), b.read()
    doc_a["hosts"]["from-a"] = {}
    a.write(doc_a)
    doc_b["hosts"]["from-b"] = {}
    with pytest.raises(StateError, match="changed while it was being written"):
        b.write(doc_b)
    assert set(backend.store().read()["hosts"]) == {"from-a"}


def test_a_crashed_holders_lock_is_freed(backend, monkeypatch):
    """local: flock dies with its process; etcd: the lock key's TTL; s3: a lock not refreshed
    for LOCK_TTL is taken over (If-Match on the stale lock's ETag)."""
    import time as _time
    if backend.name == "local":
        import subprocess
        import sys
        script = (f"import time; from provision.state import LocalStateStore as S; "
                  f"s = S({backend.spec.name!r}, {str(backend.state_dir)!r}); "
                  f"l = s.lock('crashing'); l.__enter__(); print('held', flush=True); time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match="crashing"):
            with backend.store().lock("next"):
                pass
        proc.kill()
        proc.wait()
    elif backend.name == "etcd":
        import provision.state_etcd as mod
        monkeypatch.setattr(mod, "LOCK_TTL", 1)
        crashed = backend.store()
        crashed.client.write(f"/ptest/{backend.spec.name}/lock", json.dumps({"command": "crashing"}),
                             prevExist=False, ttl=1)  # what a holder that died leaves behind
        with pytest.raises(LockHeld, match="crashing"):
            with backend.store().lock("next"):
                pass
        _time.sleep(2.2)
    else:
        import boto3
        stale = {"command": "crashing", "pid": 1, "host": "gone", "since": "2020-01-01T00:00:00Z"}
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket=backend.spec.state.bucket, Key=f"ptest/{backend.spec.name}/lock.json", Body=json.dumps(stale))
        fresh = dict(stale, since=_time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime()))
    with backend.store().lock("next"):
        pass
    if backend.name == "s3":
        # a lock refreshed just now is not stale: refused
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket=backend.spec.state.bucket, Key=f"ptest/{backend.spec.name}/lock.json", Body=json.dumps(fresh))
        with pytest.raises(LockHeld, match="crashing"):
            with backend.store().lock("next"):
                pass


@pytest.mark.parametrize("backend", ["etcd", "s3"], indirect=True)  # flock needs no keep-alive
def test_a_long_holder_keeps_its_lock_alive(backend, monkeypatch):
    import time as _time
    import provision.state_etcd as etcd_mod
    import provision.state_s3 as s3_mod
    # A short TTL, refreshed often (every TTL/3, or 0.3 s against 3 s): a refresh has seconds
    # of slack on a loaded machine; the holder outlives two whole TTLs only by refreshing.
    monkeypatch.setattr(etcd_mod, "LOCK_TTL", 3)
    monkeypatch.setattr(s3_mod, "LOCK_TTL", 3)
    monkeypatch.setattr(s3_mod, "REFRESH", 0.3)
    holder = backend.store()
    with holder.lock("long run"):
        taken = _time.monotonic()
        while _time.monotonic() - taken < 2 * 3 + 0.5:
            with pytest.raises(LockHeld, match="long run"):  # held all along, not only at the end
                with backend.store().lock("next"):
                    pass
            _time.sleep(0.5)
    with backend.store().lock("next"):
        pass


@pytest.mark.parametrize("backend", ["etcd"], indirect=True)
def test_the_etcd_state_lock_is_the_lease_lock_and_keeps_older_provisions_out(backend):
    """The etcd backend's lock is provision's one etcd lock (a v3 key on a lease, etcd/lock.py);
    while older provisions may share the state etcd it also holds the v2 TTL key they take, so
    neither an older nor a newer provision can hold the cluster at the same time."""
    import etcd as etcd_v2

    from provision.etcd.lock import EtcdLock
    store = backend.store()
    key = f"/ptest/{backend.spec.name}/lock"
    elsewhere = EtcdLock(store.lease_client(), key, "provision up elsewhere", ttl=30)  # a newer provision
    assert elsewhere.acquire()
    try:
        with pytest.raises(LockHeld, match="provision up elsewhere"):
            with store.lock("next"):
                pass
        with pytest.raises(etcd_v2.EtcdKeyNotFound):  # refused before touching the older key
            store.client.read(key)
    finally:
        elsewhere.release()
    with store.lock("holder"):
        lease_value = store.lease_client().get(key)
        assert json.loads(lease_value)["command"] == "holder"
        assert store.client.read(key).value == lease_value
        with pytest.raises(etcd_v2.EtcdAlreadyExist):  # what an older provision does to take it
            store.client.write(key, json.dumps({"command": "old"}), prevExist=False, ttl=60)
    assert store.lease_client().get(key) is None
    with pytest.raises(etcd_v2.EtcdKeyNotFound):
        store.client.read(key)


def test_the_v2_lock_key_goes_in_the_release_the_readme_names():
    """The v2 lock key is a transition (older provisions take it); README's State section says
    in which release it goes. Once the package's version reaches that release while the store
    still takes the key, this fails: remove `_v2_lock` (and this test) or move the date."""
    from pathlib import Path

    from provision import __version__
    from provision.state_etcd import V2_LOCK_DROPPED_IN, EtcdStateStore
    dropped = ".".join(map(str, V2_LOCK_DROPPED_IN))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    state_section = readme.split("\n## State", 1)[1].split("\n## ", 1)[0]
    assert f"goes in provision {dropped}" in state_section
    version = tuple(int(part) for part in __version__.split(".")[:3])
    if hasattr(EtcdStateStore, "_v2_lock"):
        assert version < V2_LOCK_DROPPED_IN, f"provision {__version__} still takes the v2 lock key"
