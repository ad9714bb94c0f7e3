"""Each control-plane manifest names a digest of the files it mounts from its host, so a renewed
certificate or key changes the manifest and kubelet (which restarts a static pod only when its
manifest changes) restarts the pod. kubelet cannot run here: proven on the rendered manifests."""
from __future__ import annotations

import json

import yaml

from provision import pki
from provision.render import render_cluster
from provision.render.mounts import ANNOTATION
from tests.helpers_render import SMALL_SPEC, ignition_file, prepared, served_artifacts, write_spec

MANIFESTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def digests(spec, store, state, hosts) -> dict[str, str]:
    rendered = render_cluster(spec, state, store, hosts)
    master = json.loads(next(data for name, data in rendered.files.items() if "masters" in name))
    return {m: yaml.safe_load(ignition_file(master, f"/etc/kubernetes/manifests/{m}.yaml"))
            ["metadata"]["annotations"][ANNOTATION] for m in MANIFESTS}


def test_a_renewed_certificate_changes_the_digest_of_the_manifests_that_mount_it(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    first = digests(spec, store, state, hosts)
    assert all(d.startswith("sha256:") and len(d) == 71 for d in first.values())
    assert len(set(first.values())) == 3  # each over what it mounts
    assert digests(spec, store, state, hosts) == first  # deterministic
    pki.rotate(spec, store, hosts, leaf="scheduler")
    after_scheduler = digests(spec, store, state, hosts)
    # the scheduler's own files changed; the others mount the whole pki directory, which holds them
    assert all(after_scheduler[m] != first[m] for m in MANIFESTS)
    pki.rotate(spec, store, hosts, leaf="apiserver")
    after_apiserver = digests(spec, store, state, hosts)
    assert after_apiserver["kube-scheduler"] == after_scheduler["kube-scheduler"]  # mounts no apiserver file
    assert after_apiserver["kube-apiserver"] != after_scheduler["kube-apiserver"]
    assert after_apiserver["kube-controller-manager"] != after_scheduler["kube-controller-manager"]


def test_the_digest_covers_the_mounted_keys_which_the_boot_config_never_holds(tmp_path):
    """The scheduler's digest is over its four mounted files, its key (delivered over SSH) too."""
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    before = digests(spec, store, state, hosts)["kube-scheduler"]
    key = store.read_blob("pki/scheduler.key")
    store.write_blob("pki/scheduler.key", key.replace(b"-----END", b"\n-----END"), secret=True)
    assert digests(spec, store, state, hosts)["kube-scheduler"] != before
