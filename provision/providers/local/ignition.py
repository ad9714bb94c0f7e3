"""The real Ignition engine applied to a local host's root: its fetch and files stages, exactly
as first boot would, inside the host's network namespace.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from ...errors import ActionError
from . import image

IGNITION = "/usr/lib/dracut/modules.d/30ignition/ignition"
IGNITION_TIMEOUT = 300  # seconds per Ignition stage
RESULT_FILE = "etc/.ignition-result.json"


def completed(host_dir: Path, root: Path, config: bytes) -> bool:
    """Whether Ignition already applied `config` to `root` to the end (its files stage writes
    the result file last), though the host was not marked ignited."""
    cfg = host_dir / "config.ign"
    return (root / RESULT_FILE).is_file() and cfg.is_file() and cfg.read_bytes() == config


def setfiles_shim(shim_dir: Path) -> Path:
    """Ignition always relabels for SELinux; these hosts have no policy to apply."""
    shim_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    shim = shim_dir / "setfiles"
    if not shim.exists():  # complete or absent, never half made: hosts are created side by side
        part = shim_dir / f".setfiles.{os.getpid()}.{threading.get_ident()}"
        part.write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
        os.chmod(part, 0o755)
        os.replace(part, shim)
    return shim


def apply(name: str, ns: str, host_dir: Path, root: Path, shim_dir: Path, config: bytes) -> None:
    """A fresh image root for host `name`, then Ignition's fetch and files stages of `config`
    on it (in namespace `ns`); its logs and state under `host_dir/ignition`."""
    state = host_dir / "ignition"
    for path in (root, state):
        if path.exists():
            shutil.rmtree(path)
    image.make_root(root, name)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    cfg = host_dir / "config.ign"
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(config)
    setfiles_shim(shim_dir)
    env = {"PATH": f"{shim_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "IGNITION_CONFIG_FILE": str(cfg)}
    for stage in ("fetch", "files"):
        # Ignition writes authorized keys as the user, who cannot pass the 0700 state dir:
        # apply the config to the root bind-mounted on /mnt of a private mount namespace.
        try:
            proc = subprocess.run(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                                   "sh", "-c", 'mount --bind "$0" /mnt && exec "$@"', str(root),
                                   IGNITION, "-platform", "file", "-stage", stage,
                                   "-root", "/mnt", "-log-to-stdout", "-config-cache", str(state / "cache.json"),
                                   "-state-file", str(state / "state")],
                                  env=env, capture_output=True, text=True, timeout=IGNITION_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Ignition retries fetches without end; the host is not marked ignited, so a re-run retries.
            raise ActionError(f"local: Ignition {stage} stage for {name} did not finish within "
                              f"{IGNITION_TIMEOUT}s (a file it fetches may be unreachable)") from None
        (state / f"{stage}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            errors = [line for line in (proc.stdout + proc.stderr).splitlines()
                      if "CRITICAL" in line or "error" in line.lower()][-3:]
            raise ActionError(f"local: Ignition {stage} stage failed for {name}: "
                              f"{'; '.join(errors) or 'see ' + str(state / (stage + '.log'))}")
