"""P1 (issue 11): PKI and render for 3 masters + 1,000 workers in 10 pools, cold: `provision
render SPEC --out DIR` in a new process on an empty state (start-up, the CAs, the cluster's
certificates and keys, every machine config; goal < 0.5 s).

A host agent's own etcd certificate is issued when the host is bootstrapped (the secrets phase,
`pki_agents.ensure`), not by render. So that nothing is hidden, the same run times that work
too: issuing every host's agent certificate (1,003) in one process on the state the render
made, as `up` does for a new cluster (imports not counted), and the sum of both.

Beside them, in the same run: the `openssl` command line making the same certificates (the
three CAs, every leaf `pki.wanted_certs` lists and every host's agent certificate, same key
type, subject and SANs, one `openssl req` per certificate, as a shell script of a hand-made PKI
would), and provision's start-up alone (`provision --version`). Provision runs with its bytecode compiled (one untimed run first), as an installed package
does. Each figure is the median of several runs, as wall-clock seconds and as
CPU seconds of the process and its children (on a shared machine the wall clock carries the
other users' load; the CPU seconds do not).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKERS, POOLS, MASTERS = 1000, 10, 3
RUNS = int(os.environ.get("BENCH_P1_RUNS", "3"))
# Any well-formed hashes: render only writes them into the configs (nothing is downloaded).
FAKE_HASH = "sha512-" + "ab" * 64
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA bench@example.com"


def spec_text() -> str:
    lines = ["name: p1bench", "provider: {name: aws, region: eu-west-1}",
             "ssh: {authorized_keys: [\"" + KEY + "\"]}",
             f"artifacts: {{hashes: {{flanneld: \"{FAKE_HASH}\", fleetd: \"{FAKE_HASH}\"}}}}",
             "pools:", f"  - {{name: masters, role: master, count: {MASTERS}}}"]
    per_pool = WORKERS // POOLS
    lines += [f"  - {{name: w{i}, role: worker, count: {per_pool}, min: 0, max: {2 * per_pool}}}"
              for i in range(POOLS)]
    return "\n".join(lines) + "\n"


def timed(argv: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child and what it started) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {proc.stderr[-1500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# Times, in a new process, issuing every planned host's agent certificate on the state a render
# made (what the secrets phase does as a new cluster's hosts are bootstrapped); prints JSON.
_AGENTS = """
import json, sys, time
from provision import pki_agents
from provision.files import batched_sync
from provision.plan import plan
from provision.spec import load_spec
from provision.state import open_store
spec = load_spec(sys.argv[1])
store = open_store(spec, sys.argv[2])
names = [h.name for h in plan(spec, store.read()).desired]
wall, cpu = time.perf_counter(), time.process_time()
with batched_sync():
    made = pki_agents.ensure(spec, store, names)["created"]
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "made": len(made)}))
"""


def agents_timed(spec: Path, state_dir: Path, env: dict) -> tuple[float, float, int]:
    """(wall, CPU seconds, certificates made) of issuing every host's agent certificate."""
    proc = subprocess.run([sys.executable, "-c", _AGENTS, str(spec), str(state_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"issuing the agents' certificates failed: {proc.stderr[-1500:]}")
    found = json.loads(proc.stdout)
    return found["wall"], found["cpu"], found["made"]


def openssl_script(folder: Path) -> Path:
    """A shell script making the same certificates with the openssl command line."""
    sys.path.insert(0, str(REPO))
    from provision import pki, pki_agents
    from provision.plan import plan
    from provision.spec import parse_spec
    import yaml
    spec = parse_spec(yaml.safe_load(spec_text()))
    hosts = plan(spec, {}).desired
    newkey = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" if spec.pki.algorithm == "ecdsa-p256" \
        else "-newkey rsa:2048"
    days = 365
    lines = ["set -e"]
    cas = sorted({w.issuer for w in pki.wanted_certs(spec, hosts)})
    for ca in cas:
        lines.append(f"openssl req -x509 {newkey} -nodes -keyout {ca}.key -out {ca}.crt -subj /CN={ca} "
                     f"-days {days} -addext basicConstraints=critical,CA:TRUE "
                     f"-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null")
    for want in pki.wanted_certs(spec, hosts) + [pki_agents.agent_cert(h.name) for h in hosts]:
        subject = "".join(f"/O={o}" for o in want.organizations) + f"/CN={want.common_name}"
        sans = ",".join(want.sans)
        san = f" -addext subjectAltName={sans}" if sans else ""
        lines.append(f"openssl req -x509 {newkey} -nodes -keyout {want.name}.key -out {want.name}.crt "
                     f"-subj '{subject}' -days {days} -CA {want.issuer}.crt -CAkey {want.issuer}.key{san} 2>/dev/null")
    path = folder / "pki.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


def run() -> dict:
    title = "P1: PKI + render, 3 masters + 1,000 workers in 10 pools, cold (median seconds)"
    if shutil.which("openssl") is None:
        return {"name": title, "figures": {"skipped": "no openssl command"}, "ratios": {}}
    folder = Path(tempfile.mkdtemp(prefix="provision-bench-p1-"))
    try:
        spec = folder / "spec.yaml"
        spec.write_text(spec_text())
        script = openssl_script(folder)
        certs = sum(1 for line in script.read_text().splitlines() if line.startswith("openssl"))
        provision_runs, openssl_runs, startup_runs, agent_runs = [], [], [], []
        # Bytecode as an installed package has it: compiled once, before timing, into the bench's
        # folder (a shell with PYTHONDONTWRITEBYTECODE set would otherwise time CPython compiling
        # provision's sources on every run). "Cold" is the state: each timed run starts empty.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        timed([sys.executable, "-m", "provision", "render", str(spec), "--out", str(folder / "warm"),
               "--state-dir", str(folder / "warm-state"), "-q"], REPO, env)
        for i in range(RUNS):
            provision_runs.append(timed([sys.executable, "-m", "provision", "render", str(spec), "--out",
                                         str(folder / f"out{i}"), "--state-dir", str(folder / f"state{i}"), "-q"],
                                        REPO, env))
            agent_runs.append(agents_timed(spec, folder / f"state{i}", env))
            startup_runs.append(timed([sys.executable, "-m", "provision", "--version"], REPO, env))
            work = folder / f"openssl{i}"
            work.mkdir()
            openssl_runs.append(timed(["sh", str(script)], work))
        configs = len(list((folder / "out0").iterdir()))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def median(runs, which):
        return round(statistics.median(r[which] for r in runs), 3)

    agents_made = agent_runs[0][2]
    both_cpu = round(statistics.median(r[1] + a[1] for r, a in zip(provision_runs, agent_runs)), 3)
    figures = {
        "provision_render_wall_s (goal < 0.5)": median(provision_runs, 0),
        "provision_render_cpu_s": median(provision_runs, 1),
        f"agent_certs_{agents_made}_at_bootstrap_wall_s (in-process)": median(agent_runs, 0),
        f"agent_certs_{agents_made}_at_bootstrap_cpu_s (in-process)": median(agent_runs, 1),
        "render + agent certs, cpu_s": both_cpu,
        "provision_startup_wall_s": median(startup_runs, 0),
        "provision_startup_cpu_s": median(startup_runs, 1),
        f"openssl_{certs}_certs_wall_s (baseline)": median(openssl_runs, 0),
        f"openssl_{certs}_certs_cpu_s (baseline)": median(openssl_runs, 1),
        "files_written (configs + index.json)": configs,
    }
    ratios = {
        "openssl / provision, wall": round(median(openssl_runs, 0) / median(provision_runs, 0), 2),
        "openssl / provision, cpu": round(median(openssl_runs, 1) / median(provision_runs, 1), 2),
        "openssl / (render + agent certs), cpu": round(median(openssl_runs, 1) / both_cpu, 2),
        "startup share of provision, cpu": round(median(startup_runs, 1) / median(provision_runs, 1), 2),
    }
    return {"name": title, "figures": figures, "ratios": ratios}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
