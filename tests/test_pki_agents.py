"""Host agents' etcd certificates are issued as each host is bootstrapped (the `secrets` phase
delivers them), not by `render`/the pki phase for every desired host: a 1,000-worker render
makes only the cluster's certificates, a host added makes exactly its own, a CA rotation's
`reissue` issues again those of the hosts bootstrapped. Checked with openssl and real files."""
from __future__ import annotations

import json
import subprocess

import pytest

from provision import pki, pki_agents, pki_ca
from provision.errors import ActionError
from provision.phases import RunContext
from provision.phases.secrets import deliverable
from provision.plan import plan
from provision.spec import load_spec
from provision.state import open_store
from provision.ui import UI
from tests.conftest import run_cli
from tests.helpers_render import write_spec

WORKERS = """\
name: agents
provider:
  name: local
  subnet: 10.79.0.0/24
etcd:
  count: 1
pools:
  - name: masters
    role: master
    count: 1
  - name: workers
    role: worker
    count: {count}
"""


# any well-formed hashes: render only writes them into the configs (nothing is downloaded)
FAKE_HASHES_YAML = "artifacts: {hashes: {flanneld: \"sha512-%s\", fleetd: \"sha512-%s\"}}\n" % ("ab" * 64, "ab" * 64)

SSH_KEY_YAML = ('ssh: {authorized_keys: ["ssh-ed25519 '
                'AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA test@example.com"]}\n')


def big_spec(workers: int, pools: int) -> str:
    per_pool = workers // pools
    return ("name: thousand\nprovider: {name: aws, region: eu-west-1}\n" + FAKE_HASHES_YAML + SSH_KEY_YAML
            + "pools:\n  - {name: masters, role: master, count: 3}\n"
            + "".join(f"  - {{name: w{i}, role: worker, count: {per_pool}}}\n" for i in range(pools)))


def agent_blobs(store) -> list[str]:
    return [b for b in store.list_blobs("pki/") if b.startswith("pki/etcd-agent-")]


def test_render_of_1000_workers_issues_no_agent_certificate_and_names_a_few(tmp_path):
    spec = write_spec(tmp_path, big_spec(1000, 10))
    state_dir = tmp_path / "state"
    result = run_cli("render", spec, "--out", tmp_path / "out", "--state-dir", state_dir, "-o", "json", timeout=300)
    assert result.code == 0, result.err[-2000:]
    made = json.loads(result.out)["pki_created"]
    blobs = sorted(p.name for p in (state_dir / "thousand" / "pki").iterdir())
    assert not [b for b in blobs if b.startswith("etcd-agent-")], blobs
    assert "etcd-server-thousand-masters-2" in made and not [n for n in made if n.startswith("etcd-agent-")]
    # the log names five and says how many more; -o json has every name
    line = next(ln for ln in result.err.splitlines() if "[pki] created" in ln)
    assert line.endswith(f"and {len(made) - 5} more") and line.count(",") == 4, line
    assert ", ".join(made[:5]) in line


def context(tmp_path, count: int, dry_run: bool = False) -> RunContext:
    spec = load_spec(write_spec(tmp_path, WORKERS.format(count=count), f"c{count}.yaml"))
    store = open_store(spec, tmp_path / "state")
    return RunContext(spec=spec, store=store, state=store.read(), ui=UI(verbosity=-1), dry_run=dry_run)


def test_bootstrapping_one_more_host_issues_its_certificate_alone(tmp_path):
    ctx = context(tmp_path, 2)
    desired = plan(ctx.spec, ctx.state).desired
    pki.ensure_pki(ctx.spec, ctx.store, desired)
    assert agent_blobs(ctx.store) == []
    names = [h.name for h in desired]
    first, issued = deliverable(ctx, desired, names)  # `up`: every host's secrets, agents' certificates first
    assert sorted(issued) == sorted(f"etcd-agent-{n}" for n in names)
    assert sorted(agent_blobs(ctx.store)) == sorted(f"pki/etcd-agent-{n}.{s}" for n in names for s in ("crt", "key"))
    assert all(files["/etc/ssl/etcd/agent.key"].data == ctx.store.read_blob(f"pki/etcd-agent-{n}.key")
               for n, files in first.items())
    before = {b: ctx.store.read_blob(b) for b in agent_blobs(ctx.store)}

    grown = context(tmp_path, 3)  # `scale workers 3`
    desired = plan(grown.spec, grown.state).desired
    pki.ensure_pki(grown.spec, grown.store, desired)
    new = "agents-workers-2"
    assert f"pki/etcd-agent-{new}.crt" not in agent_blobs(grown.store)  # not made by the pki phase
    delivered, issued = deliverable(grown, desired, [new])
    assert issued == [f"etcd-agent-{new}"]
    assert sorted(set(agent_blobs(grown.store)) - set(before)) == [f"pki/etcd-agent-{new}.crt",
                                                                   f"pki/etcd-agent-{new}.key"]
    assert all(grown.store.read_blob(b) == data for b, data in before.items())  # the others untouched
    assert list(delivered) == [new]
    # a real client certificate of the etcd CA whose CN is the host's etcd user
    crt = grown.store.blob_path(f"pki/etcd-agent-{new}.crt")
    verify = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile",
                             str(grown.store.blob_path("pki/etcd-ca.crt")), str(crt)],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(crt)],
                             capture_output=True, text=True, timeout=30).stdout
    assert subject.strip().endswith(f"CN = etcd-agent-{new}"), subject
    # a re-run changes nothing
    again, issued = deliverable(grown, desired, [*names, new])
    assert sorted(again) == sorted([*names, new]) and issued == []
    assert all(grown.store.read_blob(b) == data for b, data in before.items())


def test_dry_run_issues_nothing_and_leaves_the_host_out(tmp_path):
    ctx = context(tmp_path, 1, dry_run=True)
    desired = plan(ctx.spec, ctx.state).desired
    pki.ensure_pki(ctx.spec, ctx.store, desired)
    blobs = ctx.store.list_blobs()
    assert deliverable(ctx, desired, [h.name for h in desired]) == ({}, [])
    assert ctx.store.list_blobs() == blobs


def test_without_an_etcd_ca_nothing_is_issued(tmp_path):
    ctx = context(tmp_path, 1)
    with pytest.raises(ActionError, match="no usable etcd CA"):
        pki_agents.ensure(ctx.spec, ctx.store, ["agents-workers-0"])
    assert ctx.store.list_blobs() == []


def test_reissue_of_an_etcd_ca_rotation_issues_again_the_bootstrapped_hosts_only(tmp_path):
    ctx = context(tmp_path, 3)
    desired = plan(ctx.spec, ctx.state).desired
    pki.ensure_pki(ctx.spec, ctx.store, desired)
    booted = ["agents-masters-0", "agents-workers-0"]
    pki_agents.ensure(ctx.spec, ctx.store, booted)
    assert pki_agents.issued(ctx.store) == booted
    old = {b: ctx.store.read_blob(b) for b in agent_blobs(ctx.store)}
    state = ctx.state
    assert pki_ca.advance(ctx.spec, ctx.store, state, desired, pki.ETCD_CA) == pki_ca.TRUST
    pki_ca.mark_rolled(state)
    assert pki_ca.advance(ctx.spec, ctx.store, state, desired, pki.ETCD_CA) == pki_ca.REISSUE
    assert pki_agents.issued(ctx.store) == booted  # no certificate for a host not bootstrapped
    ca = str(ctx.store.blob_path("pki/etcd-ca.crt"))
    for host in booted:
        blob = f"pki/etcd-agent-{host}.crt"
        assert ctx.store.read_blob(blob) != old[blob]
        verify = subprocess.run(["openssl", "verify", "-CAfile", ca, str(ctx.store.blob_path(blob))],
                                capture_output=True, text=True, timeout=30)
        assert verify.returncode == 0, verify.stdout + verify.stderr
