"""Stand-in for the `vagrant` command where no hypervisor can run (these machines).

`validate` is passed to the real vagrant. `up`, `halt`, `status --machine-readable` and
`destroy` keep VMs in a JSON file ($FAKE_VAGRANT_DB) and answer in Vagrant's machine-readable
format, for the machines the project's hosts.json defines (as the real Vagrantfile would). It
refuses what the real tools refuse:

- boxes: the box must be installed ($FAKE_VAGRANT_DB.boxes, a JSON list) or come from a
  `box_url` (then it is added, as `vagrant up` downloads it);
- networks: VirtualBox 6.1.28+ creates host-only networks only inside 192.168.56.0/21;
  libvirt refuses a private network that overlaps a network of the host
  ($FAKE_VAGRANT_HOST_NETWORKS, comma-separated; default docker0's 172.17.0.0/16);
- the VirtualBox guest property `/Ignition/Config` holds at most 1 KiB;
- power states: running, poweroff (`halt`), not_created; `up` starts a powered-off VM again
  without a first boot.

A first boot does what Ignition does with a pointer boot config: fetches `replace.source` over
HTTP (the server must answer while `up` runs) and checks `verification.hash`; the VM records
the sha512 of what it got, or comes up with `ignition: failed` and `up` fails like a VM that
never answers SSH. With $FAKE_VAGRANT_IGNITION_ROOT set, the real Ignition engine boots each
new VM into `<that dir>/<vm>` instead (root only).

Faults queued in $FAKE_VAGRANT_DB.faults: "fail" makes the next `up` fail before creating
anything; "drop" makes it create the VMs and then fail (a crash after the work).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VIRTUALBOX_HOST_ONLY = ipaddress.ip_network("192.168.56.0/21")
GUEST_PROPERTY_LIMIT = 1024


IGNITION = "/usr/lib/dracut/modules.d/30ignition/ignition"


def real_ignition(boot_config: str, root: Path) -> dict:
    """The real Ignition engine's fetch and files stages on `boot_config` into `root` (as the
    VM's first boot would), when $FAKE_VAGRANT_IGNITION_ROOT asks for it (needs root)."""
    work = root.with_name(root.name + ".ignition")
    shim = work / "shim"
    for d in (root / "etc" / "selinux", shim):
        d.mkdir(parents=True, exist_ok=True)
    (root / "etc" / "selinux" / "config").write_text("SELINUXTYPE=targeted\n")
    (shim / "setfiles").write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")  # this build always relabels
    (shim / "setfiles").chmod(0o755)
    (work / "boot.ign").write_text(boot_config)
    env = dict(os.environ, IGNITION_CONFIG_FILE=str(work / "boot.ign"), PATH=f"{shim}:{os.environ['PATH']}")
    for stage in ("fetch", "files"):
        proc = subprocess.run([IGNITION, "-platform", "file", "-stage", stage, "-root", str(root), "-log-to-stdout",
                               "-config-cache", str(work / "cache.json"), "-state-file", str(work / "state")],
                              env=env, capture_output=True, text=True, timeout=60)
        (work / f"{stage}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            return {"ignition": "failed", "error": f"ignition {stage} stage exit {proc.returncode}"}
    return {"ignition": "ok", "engine": "real"}


def first_boot(boot_config: str | None, name: str) -> dict:
    """What Ignition on the VM's first boot gets from its boot config."""
    if not boot_config:
        return {"ignition": "no config"}
    engine_root = os.environ.get("FAKE_VAGRANT_IGNITION_ROOT")
    if engine_root:
        return real_ignition(boot_config, Path(engine_root) / name)
    doc = json.loads(boot_config)
    replace = doc.get("ignition", {}).get("config", {}).get("replace")
    if not replace:
        return {"ignition": "ok", "config_sha512": hashlib.sha512(boot_config.encode()).hexdigest()}
    try:
        with urllib.request.urlopen(replace["source"], timeout=5) as response:
            body = response.read()
    except OSError as err:
        return {"ignition": "failed", "error": f"GET {replace['source']}: {err}"}
    algorithm, _, expected = replace.get("verification", {}).get("hash", "").partition("-")
    if algorithm != "sha512" or hashlib.sha512(body).hexdigest() != expected:
        return {"ignition": "failed", "error": "config hash mismatch"}
    return {"ignition": "ok", "config_sha512": hashlib.sha512(body).hexdigest()}


def refuse_network(hypervisor: str, address: str) -> str | None:
    ip = ipaddress.ip_address(address)
    if hypervisor == "virtualbox":
        if ip not in VIRTUALBOX_HOST_ONLY:
            return ("The IP address configured for the host-only network is not within the allowed ranges. "
                    f"Address: {address} Ranges: {VIRTUALBOX_HOST_ONLY}")
        return None
    network = ipaddress.ip_network(f"{address}/24", strict=False)  # Vagrant's default netmask
    for used in os.environ.get("FAKE_VAGRANT_HOST_NETWORKS", "172.17.0.0/16").split(","):
        if used and network.overlaps(ipaddress.ip_network(used.strip())):
            return ("Error while activating network: Call to virNetworkCreate failed: internal error: "
                    f"Network is already in use by an interface of the host ({used.strip()}).")
    return None


def main(argv: list[str]) -> int:
    if argv and argv[0] == "validate":
        real = os.environ.get("FAKE_VAGRANT_REAL")
        os.execv(real, [real, *argv])
    project = Path(os.environ.get("VAGRANT_CWD") or os.getcwd())
    settings = json.loads((project / "hosts.json").read_text())
    defined = {h["name"]: h for h in settings["hosts"]}
    db_path = Path(os.environ["FAKE_VAGRANT_DB"])
    db = json.loads(db_path.read_text()) if db_path.exists() else {}
    vms = db.setdefault(str(project), {})
    command = argv[0]
    hypervisor = os.environ.get("VAGRANT_DEFAULT_PROVIDER", "virtualbox")
    if "--provider" in argv:
        hypervisor = argv[argv.index("--provider") + 1]
    args = [a for a in argv[1:] if not a.startswith("-") and a not in ("libvirt", "virtualbox")]
    for name in args:
        if name not in defined:
            print(f"The machine with the name '{name}' was not found configured for this Vagrant environment.",
                  file=sys.stderr)
            return 1
    if command == "up":
        calls = Path(f"{db_path}.calls")
        calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
        faults_path = Path(f"{db_path}.faults")
        faults = json.loads(faults_path.read_text()) if faults_path.exists() else []
        fault = faults.pop(0) if faults else None
        faults_path.write_text(json.dumps(faults))
        if fault == "fail":
            print("The box could not be found (injected)", file=sys.stderr)
            return 1
        boxes_path = Path(f"{db_path}.boxes")
        boxes = json.loads(boxes_path.read_text()) if boxes_path.exists() else []
        names = args or list(defined)
        if any(vms.get(n, {}).get("state", "not_created") == "not_created" for n in names) \
                and settings["box"] not in boxes:
            if not settings.get("box_url"):
                print(f"The box '{settings['box']}' could not be found or could not be accessed in the remote "
                      "catalog.", file=sys.stderr)
                return 1
            boxes.append(settings["box"])
            boxes_path.write_text(json.dumps(boxes))
        failed = []
        for name in names:
            vm = vms.get(name, {"state": "not_created"})
            if vm["state"] == "running":
                continue
            if vm["state"] == "poweroff":
                vm["state"] = "running"
                vm["boots"] = vm.get("boots", 1) + 1
                continue
            host = defined[name]
            refused = refuse_network(hypervisor, host["address"])
            if refused:
                print(refused, file=sys.stderr)
                db_path.write_text(json.dumps(db))
                return 1
            boot_config = host.get("boot_config")
            if hypervisor == "virtualbox" and boot_config and len(boot_config.encode()) > GUEST_PROPERTY_LIMIT:
                print(f"VBoxManage: error: Could not set the guest property /Ignition/Config: the value is "
                      f"{len(boot_config.encode())} bytes, over {GUEST_PROPERTY_LIMIT} (VERR_TOO_MUCH_DATA)",
                      file=sys.stderr)
                db_path.write_text(json.dumps(db))
                return 1
            vm = {"state": "running", "boots": 1, "hypervisor": hypervisor, "hostname": name,
                  "address": host["address"], **first_boot(boot_config, name)}
            vms[name] = vm
            # every VM made, by name: the contract test counts creations per host
            created_path = Path(f"{db_path}.created")
            created = json.loads(created_path.read_text()) if created_path.exists() else []
            created_path.write_text(json.dumps(created + [name]))
            if vm["ignition"] == "failed":
                failed.append(name)
        db_path.write_text(json.dumps(db))
        if failed:
            print(f"Timed out while waiting for the machine to boot: {', '.join(failed)}", file=sys.stderr)
            return 1
        if fault == "drop":
            print("An error occurred after the machines were created (injected)", file=sys.stderr)
            return 1
        return 0
    if command == "halt":
        for name in args or list(vms):
            if name in vms:
                vms[name]["state"] = "poweroff"
        db_path.write_text(json.dumps(db))
        return 0
    if command == "status":
        now = int(time.time())
        for name in args or list(defined):
            state = vms.get(name, {}).get("state", "not_created")
            print(f"{now},{name},metadata,provider,{hypervisor}")
            print(f"{now},{name},provider-name,{hypervisor}")
            print(f"{now},{name},state,{state}")
            print(f"{now},{name},state-human-short,{state.replace('_', ' ')}")
        return 0
    if command == "destroy":
        for name in args or list(vms):
            vms.pop(name, None)
        db_path.write_text(json.dumps(db))
        return 0
    print(f"fake vagrant: unsupported command {command}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
