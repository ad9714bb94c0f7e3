"""Role `secrets` run by the real pyinfra over SSH against a local host (network namespace, the
image's sshd): each file lands root-owned 0600 in a 0700 directory, a second run changes
nothing, a changed key is rewritten (and only it), and a run without the phase's data writes
nothing."""
from __future__ import annotations

import subprocess

import pytest

from provision import bootstrap
from provision.phases.secrets import role_data
from provision.render.machine import File

from .conftest import needs_root

# The tests walk one host through a sequence (delivered, rewritten, repaired): kept in file order
# when the suite is shuffled (the module as a whole still runs at any point of the suite).
pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root, pytest.mark.random_order(disabled=True)]

KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA" + b"x" * 40 + b"\n-----END EC PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def host(ssh_hosts):
    """The master of the module's local cluster (tests/local/conftest.py): one host is enough."""
    name = next(n for n, h in sorted(ssh_hosts["hosts"].items()) if h["role"] == "master")
    return {**ssh_hosts, "hosts": {name: ssh_hosts["hosts"][name]}, "name": name,
            "root": ssh_hosts["provider"].host_root(name)}


def run(info, files=None):
    host_only = {info["name"]: role_data(files)} if files is not None else None
    return bootstrap.run_roles(info["spec"], info["workdir"], info["hosts"], ("secrets",), info["key"],
                               host_only=host_only)[info["name"]]


def bundle(key: bytes = KEY) -> dict[str, File]:
    return {"/etc/ssl/etcd/agent.key": File("/etc/ssl/etcd/agent.key", 0o600, key),
            "/etc/kubernetes/pki/sa.key": File("/etc/kubernetes/pki/sa.key", 0o600, key),
            "/etc/kubernetes/bootstrap-kubeconfig": File("/etc/kubernetes/bootstrap-kubeconfig", 0o600,
                                                         b"token: abcdef.0123456789abcdef\n")}


def test_files_land_0600_in_private_directories_and_a_rerun_changes_nothing(host):
    root = host["root"]
    nothing = run(host)  # without the phase's data: nothing written
    assert nothing.error is None and nothing.changed == 0
    assert not (root / "etc/ssl/etcd/agent.key").exists()

    first = run(host, bundle())
    # one archive: the upload directory with its empty 0600 file, the upload, the unpacking
    assert first.error is None and first.changed == first.operations == 3
    for path, f in bundle().items():
        on_host = root / path.lstrip("/")
        st = on_host.stat()
        assert on_host.read_bytes() == f.data, path
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 0), path
    for directory in ("etc/ssl/etcd", "etc/kubernetes/pki"):
        st = (root / directory).stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (0o700, 0), directory

    again = run(host, bundle())
    assert again.error is None and again.changed == again.operations == 0, again  # nothing differs: no operation

    # a renewed key is written again; the files that did not change are left alone
    before = {p: (root / p.lstrip("/")).stat().st_mtime_ns for p in bundle()}
    renewed = bundle()
    renewed["/etc/ssl/etcd/agent.key"] = File("/etc/ssl/etcd/agent.key", 0o600, KEY.replace(b"x", b"y"))
    third = run(host, renewed)
    # the upload directory and file, the upload, the unpacking, the reader's restart (systemd hosts only)
    assert third.error is None and third.changed == 4
    assert (root / "etc/ssl/etcd/agent.key").read_bytes() == renewed["/etc/ssl/etcd/agent.key"].data
    for path in ("/etc/kubernetes/pki/sa.key", "/etc/kubernetes/bootstrap-kubeconfig"):
        assert (root / path.lstrip("/")).stat().st_mtime_ns == before[path], path


def test_a_loosened_mode_is_put_back(host):
    run(host, bundle())
    target = host["root"] / "etc/kubernetes/pki/sa.key"
    target.chmod(0o644)
    (host["root"] / "etc/ssl/etcd").chmod(0o755)
    fixed = run(host, bundle())
    assert fixed.error is None and fixed.changed == 3  # the upload directory and file, the upload, the unpacking
    assert target.stat().st_mode & 0o7777 == 0o600
    assert (host["root"] / "etc/ssl/etcd").stat().st_mode & 0o7777 == 0o700
    assert run(host, bundle()).operations == 0
    # the temporary copies pyinfra uploads are gone, and their directory is the SSH user's alone
    upload = host["root"] / "run" / "provision-upload-core"
    assert upload.stat().st_mode & 0o7777 == 0o700 and list(upload.iterdir()) == []


def test_a_renewed_token_secret_is_sent_to_the_api_by_the_first_master(host):
    """The first master's copy of the token Secret changed (the pki phase renewed the token): the
    role adds the step that creates the new Secret through the API (run on systemd hosts once the
    run-once bootstrap is done; a local host has no API, and the step does nothing there)."""
    path = "/etc/kubernetes/addons/bootstrap-token.yaml"
    files = dict(bundle(), **{path: File(path, 0o600, b"token-id: aaaaaa\n")})
    run(host, files)
    assert (host["root"] / path.lstrip("/")).stat().st_mode & 0o7777 == 0o600
    assert (host["root"] / "etc/kubernetes/addons").stat().st_mode & 0o7777 == 0o700
    renewed = dict(files, **{path: File(path, 0o600, b"token-id: bbbbbb\n")})
    outcome = run(host, renewed)
    assert outcome.error is None and outcome.changed == 4  # upload directory and file, upload, unpack, the token step
    assert (host["root"] / path.lstrip("/")).read_bytes() == b"token-id: bbbbbb\n"
    assert run(host, renewed).operations == 0


def test_the_retired_kube_proxy_files_go_only_once_the_addons_are_applied(host):
    """A host set up by an earlier version still has kube-proxy's static pod, its kubeconfig and
    the client key every node shared. The secrets role leaves them (the `secrets` phase runs
    before the addons that replace them are applied); the node role removes them (and only them)
    when its phase says the addons are recorded applied (`remove_retired`), and not before; a
    re-run does nothing."""
    run(host, bundle())
    root = host["root"]
    leftovers = ["etc/kubernetes/manifests/kube-proxy.yaml", "etc/kubernetes/kube-proxy.conf",
                 "etc/kubernetes/pki/kube-proxy.key", "etc/kubernetes/pki/kube-proxy.crt"]
    # made on the host itself (over SSH): its /etc is an overlay that files made beneath it may miss
    address = host["hosts"][host["name"]]["address"]
    make = "; ".join(f"mkdir -p /{p.rsplit('/', 1)[0]} && echo old > /{p}" for p in leftovers)
    proc = subprocess.run(["ssh", "-i", str(host["key"]), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", f"core@{address}", f"sudo sh -c '{make}'"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all((root / p).exists() for p in leftovers)
    assert run(host, bundle()).operations == 0  # the secrets role: nothing to deliver, nothing removed
    assert all((root / p).exists() for p in leftovers)

    def node_role(remove: bool):
        return bootstrap.run_roles(host["spec"], host["workdir"], host["hosts"], ("masters",), host["key"],
                                   data={"remove_retired": remove})[host["name"]]

    before = node_role(False)  # addons not recorded applied: kept
    assert before.error is None and all((root / p).exists() for p in leftovers)
    assert not any("retired" in note for note in before.notes)
    removed = node_role(True)
    assert removed.error is None and removed.changed == 1 and "4 retired files removed" in removed.notes, removed
    assert [p for p in leftovers if (root / p).exists()] == []
    assert all((root / p.lstrip("/")).read_bytes() == f.data for p, f in bundle().items())  # nothing else touched
    again = node_role(True)
    assert again.error is None and again.changed == 0  # no removal left to do


def test_the_addons_role_writes_the_addon_files_that_differ_then_applies(host):
    """Role `addons` (the masters phase runs it on the first master when the rendered addons
    differ from what state records as applied): the addon files land root's with their modes,
    then the apply step runs (`bootstrap.sh addons`, on systemd hosts whose bootstrap is done; a
    local host runs no API and the step does nothing there); a re-run writes nothing and applies
    again (the apply itself is idempotent)."""
    root = host["root"]
    files = [["/etc/kubernetes/addons/index", 0o644, b"/api/v1/namespaces/kube-system/serviceaccounts sa.yaml\n"],
             ["/etc/kubernetes/addons/sa.yaml", 0o644, b"kind: ServiceAccount\n"],
             ["/opt/provision/bootstrap.sh", 0o755, b"#!/bin/sh\nexit 0\n"]]

    def addons_role(given):
        return bootstrap.run_roles(host["spec"], host["workdir"], host["hosts"], ("addons",), host["key"],
                                   host_only={host["name"]: {"addon_files": given}})[host["name"]]

    first = addons_role(files)
    assert first.error is None, first
    assert first.extra["written"] == sorted(p for p, _, _ in files)
    assert first.changed == len(files) + 1  # each file, then the apply step
    for path, mode, data in files:
        on_host = root / path.lstrip("/")
        st = on_host.stat()
        assert on_host.read_bytes() == data and (st.st_mode & 0o7777, st.st_uid) == (mode, 0), path
    changed = [files[0], files[1][:2] + [b"kind: ServiceAccount\nmetadata: {name: x}\n"], files[2]]
    second = addons_role(changed)
    assert second.error is None and second.extra["written"] == ["/etc/kubernetes/addons/sa.yaml"]
    assert (root / "etc/kubernetes/addons/sa.yaml").read_bytes() == changed[1][2]
    third = addons_role(changed)
    assert third.error is None and third.extra["written"] == [] and third.changed == 1  # the apply only
