"""A real 3-member etcd cluster from the rendered etcd units: the exact environment files and
certificates, one member per network namespace on its planned address, then a TLS client with
the rendered client certificate, a client without one, and the rendered host-load agent."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from provision import pki
from provision.phases.secrets import deliverable
from provision.render import render_secrets
from tests.real import require
from tests.helpers_render import (env_file, ignition_file, ignition_units, render, served_artifacts,
                                  which_or_fail, write_spec)

pytestmark = [pytest.mark.slow, pytest.mark.root]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=check)


def free_subnet() -> ipaddress.IPv4Network:
    routes = sh("ip", "-4", "route", "show").stdout
    used = [ipaddress.ip_network(w.split()[0], strict=False) for w in routes.splitlines()
            if w and w.split()[0][0].isdigit()]
    for _ in range(50):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(40) + 200}.{secrets.randbelow(250)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    pytest.fail("no free 10.x subnet for the test bridge")


@pytest.fixture
def network():
    """A bridge with the gateway address and one namespace per host, removed afterwards."""
    require("root")
    which_or_fail("ip")
    tag = secrets.token_hex(2)
    net = free_subnet()
    bridge = f"pvrb{tag}"
    made = {"bridge": bridge, "netns": [], "net": net, "tag": tag}
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "addr", "add", f"{next(net.hosts())}/{net.prefixlen}", "dev", bridge)
    sh("ip", "link", "set", bridge, "up")

    def add_host(index: int, address: str) -> str:
        ns = f"pvrn{tag}{index}"
        outer, inner = f"pvrv{tag}{index}", f"pvri{tag}{index}"
        sh("ip", "netns", "add", ns)
        made["netns"].append(ns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", outer, "master", bridge, "up")
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{address}/{net.prefixlen}", "dev", inner)
        sh("ip", "-n", ns, "link", "set", inner, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    made["add_host"] = add_host
    try:
        yield made
    finally:
        for ns in made["netns"]:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", bridge, check=False)


def lay_out(config: dict, root: Path, secrets: dict | None = None) -> None:
    """The inline files of an Ignition config under `root`, with their modes, then the host's
    secret files (what the secrets phase delivers over SSH after boot)."""
    for f in config["storage"]["files"]:
        if not f["contents"]["source"].startswith("data:"):
            continue
        path = root / f["path"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ignition_file(config, f["path"]))
        path.chmod(f["mode"])
    for d in config["storage"]["directories"]:
        (root / d["path"].lstrip("/")).mkdir(parents=True, exist_ok=True, mode=d["mode"])
    for f in (secrets or {}).values():
        path = root / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
        path.chmod(f.mode)


def rooted(env: dict[str, str], root: Path) -> dict[str, str]:
    """The same environment with host paths that the config wrote moved under `root`."""
    out = {}
    for key, value in env.items():
        if value.startswith("/") and (root / value.lstrip("/")).exists():
            value = str(root / value.lstrip("/"))
        out[key] = value
    return out


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return line[len("ExecStart="):].split()


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def get(url: str, ctx: ssl.SSLContext, timeout: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as response:
        return response.read()


def test_three_members_from_the_rendered_units_form_a_tls_cluster(network, tmp_path):
    etcd_binary = which_or_fail("etcd")
    which_or_fail("curl")
    net = network["net"]
    text = f"""\
name: tls{network['tag']}
provider:
  name: local
  subnet: {net}
etcd:
  count: 3
pools:
  - {{name: masters, role: master, count: 3}}
  - {{name: workers, role: worker, count: 1}}
headroom:
  pool: workers
  source: etcd
"""
    spec, store, hosts, rendered = render(write_spec(tmp_path, text), tmp_path / "state",
                                          served_artifacts(f"http://{next(net.hosts())}:8080"))
    members = [h for h in hosts if h.etcd]
    assert len(members) == 3
    processes = []
    roots = {}
    try:
        for i, host in enumerate(members):
            config = json.loads(rendered.config_for(host.name))
            root = tmp_path / "hosts" / host.name
            assert not (root / "etc/ssl/etcd/server.key").exists()
            lay_out(config, root, rendered.secrets_for(host.name))
            roots[host.name] = root
            unit = ignition_units(config)["etcd-member.service"]
            assert "EnvironmentFile=/etc/etcd/etcd.env" in unit
            argv = exec_start(unit)
            assert argv == ["/opt/bin/etcd"]  # the whole configuration is in the environment file
            env = rooted(env_file((root / "etc/etcd/etcd.env").read_text()), root)
            assert env["ETCD_DATA_DIR"].startswith(str(root))
            ns = network["add_host"](i, host.address)
            log = open(tmp_path / f"{host.name}.log", "wb")
            processes.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "env", "-i", f"PATH={os.environ['PATH']}",
                 *[f"{k}={v}" for k, v in sorted(env.items())], etcd_binary],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        tls = pki.client_tls(store)  # the provisioner's own client certificate
        with_cert = tls_context(tls.ca, tls.cert, tls.key)
        deadline = time.monotonic() + 30
        healthy = set()
        while time.monotonic() < deadline and len(healthy) < 3:
            for host in members:
                try:
                    if json.loads(get(f"https://{host.address}:2379/health", with_cert)).get("health") == "true":
                        healthy.add(host.name)
                except (urllib.error.URLError, OSError, ValueError):
                    pass
            time.sleep(0.3)
        logs = {h.name: (tmp_path / f"{h.name}.log").read_text(errors="replace")[-1500:] for h in members}
        assert len(healthy) == 3, logs
        # the members know each other by the rendered names and peer URLs
        ctl = subprocess.run(["etcdctl", f"--endpoints=https://{members[0].address}:2379", f"--cacert={tls.ca}",
                              f"--cert={tls.cert}", f"--key={tls.key}", "member", "list", "-w", "json"],
                             capture_output=True, text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
        assert ctl.returncode == 0, ctl.stderr
        listed = {m["name"]: m["peerURLs"] for m in json.loads(ctl.stdout)["members"]}
        assert listed == {h.name: [f"https://{h.address}:2380"] for h in members}
        # ... and so does a client with a certificate the configs carry (flannel's, from the master)
        ssl_dir = roots[members[0].name] / "etc/ssl/etcd"
        rendered_client = tls_context(ssl_dir / "ca.crt", ssl_dir / "flannel.crt", ssl_dir / "flannel.key")
        assert json.loads(get(f"https://{members[2].address}:2379/health", rendered_client))["health"] == "true"
        # a client without a certificate is refused
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(f"https://{members[1].address}:2379/health", tls_context(tls.ca))
        # ... and so is one with a certificate of another CA
        other = tmp_path / "other"
        other_key, other_ca = pki.make_ca("intruder", 1, "ecdsa-p256")
        want = pki.CertSpec("intruder", "intruder", pki.CLIENT)
        key, cert = pki.make_leaf(want, other_key, other_ca, 1, "ecdsa-p256")
        other.mkdir()
        (other / "c.crt").write_bytes(pki.cert_pem(cert))
        (other / "c.key").write_bytes(pki.key_pem(key))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(f"https://{members[1].address}:2379/health", tls_context(tls.ca, other / "c.crt", other / "c.key"))
        # the member also listens on 127.0.0.1 inside its namespace
        local = sh("ip", "netns", "exec", network["netns"][2], "curl", "-fsS", "--cacert", str(tls.ca), "--cert",
                   str(tls.cert), "--key", str(tls.key), "https://127.0.0.1:2379/health", check=False)
        assert local.returncode == 0 and '"health":"true"' in local.stdout.replace(" ", ""), local.stderr

        # the rendered host-load agent publishes its load on a lease of load_ttl (v3 keyspace)
        worker_name = "tls" + network["tag"] + "-workers-0"
        worker = json.loads(rendered.config_for(worker_name))
        agent_root = tmp_path / "hosts" / "worker"
        # what the secrets phase delivers: the pool's keys and this host's own agent identity
        lay_out(worker, agent_root, render_secrets(spec, {}, store, hosts, [worker_name])[worker_name])
        agent_env = rooted(env_file((agent_root / "etc/provision/host-agent.env").read_text()), agent_root)
        assert "AGENT_HOST" not in agent_env  # no per-host data in a pool config: the certificate names the host
        agent_env.update({"AGENT_ONCE": "1", "AGENT_CONTAINERS_CMD": "echo 3", "PATH": os.environ["PATH"]})
        script = agent_root / "opt/bin/provision-host-agent"
        assert os.access(script, os.X_OK)
        run = subprocess.run([str(script)], env=agent_env, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        from provision.etcd.client import Etcd
        v3client = Etcd([f"https://{members[2].address}:2379"], tls)
        value, lease = v3client.get_prefix(f"/provision/{spec.name}/hosts/{worker_name}/load")[
            f"/provision/{spec.name}/hosts/{worker_name}/load"]
        load = json.loads(value)
        assert load["containers"] == 3 and 0 <= load["cpu"] <= 1 and 0 <= load["memory"] <= 1
        assert abs(load["at"] - time.time()) < 30
        assert lease and 0 < v3client.keepalive(lease) <= spec.headroom.load_ttl
        import etcd as python_etcd
        client = python_etcd.Client(host=members[2].address, port=2379, protocol="https",
                                    cert=(str(tls.cert), str(tls.key)), ca_cert=str(tls.ca))

        # the first master's run-once bootstrap writes the flannel network config (v3, then v2);
        # "already exists" is success, and an existing config is never overwritten
        master = roots[members[0].name]
        boot_env = rooted(env_file((master / "etc/provision/bootstrap.env").read_text()), master)
        boot_env["PATH"] = os.environ["PATH"]
        script = master / "opt/provision/bootstrap.sh"
        expected = json.loads((master / "etc/provision/flannel-network.json").read_text())
        assert expected == {"Backend": {"Type": "vxlan"}, "Network": "10.2.0.0/16"}
        for _ in range(2):
            run = subprocess.run(["sh", str(script), "flannel"], env=boot_env, capture_output=True, text=True,
                                 timeout=30)
            assert run.returncode == 0, run.stderr
        got = subprocess.run(["etcdctl", f"--endpoints=https://{members[1].address}:2379", f"--cacert={tls.ca}",
                              f"--cert={tls.cert}", f"--key={tls.key}", "get", "/coreos.com/network/config",
                              "--print-value-only"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, ETCDCTL_API="3"))
        assert json.loads(got.stdout) == expected, got.stderr
        v2_env = dict(boot_env, BOOTSTRAP_ETCD_API="v2")
        for _ in range(2):
            run = subprocess.run(["sh", str(script), "flannel"], env=v2_env, capture_output=True, text=True, timeout=30)
            assert run.returncode == 0, run.stderr
        assert json.loads(client.read("/coreos.com/network/config").value) == expected
        client.write("/coreos.com/network/config", json.dumps({"Network": "10.9.0.0/16"}))
        run = subprocess.run(["sh", str(script), "flannel"], env=v2_env, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0
        assert json.loads(client.read("/coreos.com/network/config").value) == {"Network": "10.9.0.0/16"}
    finally:
        for proc in processes:
            with_suppress_kill(proc)


def with_suppress_kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # SIGTERM would wait ~8 s for a leader transfer
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def free_port(address: str) -> int:
    import socket
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def test_members_join_through_the_real_discovery_service(network, tmp_path):
    """etcd.discovery: token: the render phase gets a token from the discovery service, the
    rendered env files carry ETCD_DISCOVERY, and the members form a cluster with it."""
    from provision.phases import RunContext
    from provision.phases import pki as pki_phase
    from provision.phases import render as render_phase
    from provision.spec import load_spec
    from provision.state import open_store
    from provision.ui import UI

    etcd_binary = which_or_fail("etcd")
    discovery_binary = which_or_fail("discovery.etcd.io")
    net = network["net"]
    gateway = str(next(net.hosts()))
    backing_port, discovery_port = free_port("127.0.0.1"), free_port(gateway)
    started = []
    try:
        started.append(subprocess.Popen(
            [etcd_binary, "--data-dir", str(tmp_path / "backing"), "--enable-v2",
             "--listen-client-urls", f"http://127.0.0.1:{backing_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{backing_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{free_port('127.0.0.1')}"],
            stdout=open(tmp_path / "backing.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{backing_port}/health")
        started.append(subprocess.Popen(
            [discovery_binary, "--addr", f"{gateway}:{discovery_port}", "--etcd", f"http://127.0.0.1:{backing_port}",
             "--host", f"http://{gateway}:{discovery_port}"],
            stdout=open(tmp_path / "discovery.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://{gateway}:{discovery_port}/health")
        text = f"""\
name: disc{network['tag']}
provider:
  name: local
  subnet: {net}
etcd:
  count: 3
  discovery: token
  discovery_url: http://{gateway}:{discovery_port}
fleet:
  enabled: false
pools:
  - {{name: masters, role: master, count: 3}}
  - {{name: workers, role: worker, count: 1}}
"""
        spec = load_spec(write_spec(tmp_path, text))
        store = open_store(spec, tmp_path / "state")
        state = store.read()
        state["artifacts"] = served_artifacts(f"http://{gateway}:8080")
        ctx = RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1))
        pki_phase.run(ctx)
        render_phase.run(ctx)
        token = store.read()["etcd"]["discovery_token_url"]
        assert token.startswith(f"http://{gateway}:{discovery_port}/")
        from provision.plan import plan
        members = [h for h in plan(spec, state).desired if h.etcd]
        index = json.loads(store.read_blob("rendered/index.json"))
        for i, host in enumerate(members):
            config = json.loads(store.read_blob("rendered/" + index["hosts"][host.name]["config"]))
            root = tmp_path / "hosts" / host.name
            # as the secrets phase delivers them: the host's agent certificate issued first
            lay_out(config, root, deliverable(ctx, plan(spec, state).desired, [host.name])[0][host.name])
            env = rooted(env_file((root / "etc/etcd/etcd.env").read_text()), root)
            assert env["ETCD_DISCOVERY"] == token and "ETCD_INITIAL_CLUSTER" not in env
            ns = network["add_host"](i, host.address)
            started.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "env", "-i", f"PATH={os.environ['PATH']}",
                 *[f"{k}={v}" for k, v in sorted(env.items())], etcd_binary],
                stdout=open(tmp_path / f"{host.name}.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        tls = pki.client_tls(store)
        deadline = time.monotonic() + 30
        listed = {}
        while time.monotonic() < deadline:
            ctl = subprocess.run(["etcdctl", f"--endpoints=https://{members[0].address}:2379", f"--cacert={tls.ca}",
                                  f"--cert={tls.cert}", f"--key={tls.key}", "member", "list", "-w", "json"],
                                 capture_output=True, text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
            if ctl.returncode == 0:
                listed = {m.get("name"): m["peerURLs"] for m in json.loads(ctl.stdout)["members"]}
                if len(listed) == 3 and all(listed):
                    break
            time.sleep(0.3)
        logs = {h.name: (tmp_path / f"{h.name}.log").read_text(errors="replace")[-1000:] for h in members}
        assert listed == {h.name: [f"https://{h.address}:2380"] for h in members}, logs
    finally:
        for proc in started:
            with_suppress_kill(proc)
