"""Stand-in for the `vagrant` command where no hypervisor can run (these machines).

`validate` is passed to the real vagrant. `up`, `status --machine-readable` and `destroy` keep
VMs in a JSON file ($FAKE_VAGRANT_DB) and answer in Vagrant's machine-readable format, for the
machines the project's hosts.json defines (as the real Vagrantfile would). Faults queued in
$FAKE_VAGRANT_DB.faults: "fail" makes the next `up` fail before creating anything; "drop" makes
it create the VMs and then fail (a crash after the work).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv and argv[0] == "validate":
        real = os.environ.get("FAKE_VAGRANT_REAL")
        os.execv(real, [real, *argv])
    project = Path(os.environ.get("VAGRANT_CWD") or os.getcwd())
    defined = [h["name"] for h in json.loads((project / "hosts.json").read_text())["hosts"]]
    db_path = Path(os.environ["FAKE_VAGRANT_DB"])
    db = json.loads(db_path.read_text()) if db_path.exists() else {}
    vms = db.setdefault(str(project), {})
    command, args = argv[0], [a for a in argv[1:] if not a.startswith("-")]
    if command == "up":
        args = [a for a in args if a not in ("libvirt", "virtualbox")]
        calls = Path(f"{db_path}.calls")
        calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
        faults_path = Path(f"{db_path}.faults")
        faults = json.loads(faults_path.read_text()) if faults_path.exists() else []
        fault = faults.pop(0) if faults else None
        faults_path.write_text(json.dumps(faults))
        if fault == "fail":
            print("The box could not be found (injected)", file=sys.stderr)
            return 1
        created_path = Path(f"{db_path}.created")
        created = json.loads(created_path.read_text()) if created_path.exists() else []
        created_path.write_text(json.dumps(created + [n for n in (args or defined) if n in defined]))
        for name in args or defined:
            if name not in defined:
                print(f"The machine with the name '{name}' was not found configured for this Vagrant environment.",
                      file=sys.stderr)
                return 1
            vms[name] = "running"
        db_path.write_text(json.dumps(db))
        if fault == "drop":
            print("An error occurred after the machines were created (injected)", file=sys.stderr)
            return 1
        return 0
    if command == "status":
        now = int(time.time())
        for name in args or defined:
            print(f"{now},{name},metadata,provider,libvirt")
            print(f"{now},{name},provider-name,libvirt")
            print(f"{now},{name},state,{vms.get(name, 'not_created')}")
            print(f"{now},{name},state-human-short,{vms.get(name, 'not created')}")
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
