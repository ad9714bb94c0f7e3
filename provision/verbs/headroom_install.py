"""`provision headroom install SPEC [--timer cron|systemd] [--write]`: print (or install) a
cron line or a systemd service + timer that runs `provision headroom SPEC --once`.

Paths are made absolute from where the command runs, so the job finds the same spec and
state; the job's own lock makes overlapping runs harmless."""
from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from pathlib import Path

from ..app import App
from ..errors import ActionError, UserError

CRON_DIR = "/etc/cron.d"
SYSTEMD_DIR = "/etc/systemd/system"


def provision_command(app: App) -> list[str]:
    exe = shutil.which("provision") or f"{sys.executable} -m provision"
    cmd = shlex.split(exe) if " " in exe else [exe]
    cmd += ["headroom", str(Path(app.spec_path or "-").resolve()), "--once", "--quiet"]  # the CLI always gives SPEC
    store = app.store  # the job uses the state this command names, wherever it was chosen
    if store.backend == "local":  # (--state-dir, $PROVISION_STATE_DIR or state.path)
        cmd += ["--state-dir", str(Path(store.location).parent)]
    return cmd


def cron_entry(name: str, command: list[str], workdir: str, interval: float) -> str:
    minutes = max(1, math.ceil(interval / 60))
    schedule = "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    return (f"# provision headroom for cluster {name} (cron cannot run more often than every minute)\n"
            f"{schedule} root cd {shlex.quote(workdir)} && {shlex.join(command)} "
            f">> /var/log/provision-headroom-{name}.log 2>&1\n")


def systemd_units(name: str, command: list[str], workdir: str, interval: float) -> dict[str, str]:
    service = (f"[Unit]\nDescription=provision headroom reconcile for cluster {name}\n"
               f"After=network-online.target\nWants=network-online.target\n\n"
               f"[Service]\nType=oneshot\nWorkingDirectory={workdir}\nExecStart={shlex.join(command)}\n")
    timer = (f"[Unit]\nDescription=run provision headroom for cluster {name} every {interval:g}s\n\n"
             f"[Timer]\nOnBootSec={max(1, int(interval))}s\nOnUnitActiveSec={max(1, int(interval))}s\n"
             f"AccuracySec=1s\nUnit=provision-headroom-{name}.service\n\n[Install]\nWantedBy=timers.target\n")
    return {f"provision-headroom-{name}.service": service, f"provision-headroom-{name}.timer": timer}


def run(app: App, timer: str, write: bool) -> int:
    spec = app.spec
    if app.spec_path == "-":
        raise UserError("SPEC: the job needs a spec file it can read again, not - (standard input)")
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; nothing to install")
    command = provision_command(app)
    workdir = os.getcwd()
    if timer == "cron":
        files = {f"provision-headroom-{spec.name}": cron_entry(spec.name, command, workdir, spec.headroom.interval)}
        target = Path(os.environ.get("PROVISION_CRON_DIR", CRON_DIR))
    else:
        files = systemd_units(spec.name, command, workdir, spec.headroom.interval)
        target = Path(os.environ.get("PROVISION_SYSTEMD_DIR", SYSTEMD_DIR))
    if not write:
        text = "\n".join(f"# {name}\n{body}" for name, body in files.items())
        app.ui.result({"timer": timer, "written": False, "files": files}, text.rstrip("\n"))
        return 0
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            tmp = target / f".{name}.tmp"
            tmp.write_text(body)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target / name)
    except OSError as err:
        raise ActionError(f"cannot write into {target}: {err.strerror}") from None
    next_step = "" if timer == "cron" else \
        f"; enable it with: systemctl daemon-reload && systemctl enable --now provision-headroom-{spec.name}.timer"
    app.ui.result({"timer": timer, "written": True, "files": {str(target / n): body for n, body in files.items()}},
                  f"wrote {', '.join(str(target / n) for n in files)}{next_step}")
    return 0
