"""The minimal OS image a local host's root starts from, before Ignition applies its config:
what Flatcar's image gives Ignition (base users and groups, user `core` in sudo and docker,
SELinux config, FHS directories, an sshd unit enabled by preset).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

SSHD_UNIT = "sshd.service"
IMAGE_UNIT_DIR = "usr/lib/systemd/system"  # the image's vendor units (etc/systemd/system overrides)
IMAGE_SSHD_CONFIG = """\
# The local image's sshd: keys only, Flatcar's authorized_keys.d that Ignition writes.
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition
Subsystem sftp internal-sftp
"""
IMAGE_SSHD_UNIT = """\
[Unit]
Description=OpenSSH server daemon (local image)
After=network.target

[Service]
ExecStartPre=/bin/sh -c '[ -e /etc/ssh/ssh_host_ed25519_key ] || exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -C %H -f /etc/ssh/ssh_host_ed25519_key'
ExecStart=/usr/sbin/sshd -D -e
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
Restart=always
RestartSec=0.5

[Install]
WantedBy=multi-user.target
"""
BASE_GROUPS = ("sudo", "docker", "wheel")
IMAGE_USER, IMAGE_UID = "core", 500


def make_root(root: Path, name: str) -> None:
    """What the OS image gives Ignition: base users and groups, SELinux config, FHS dirs."""
    for d, mode in (("etc/selinux", 0o755), ("etc/sudoers.d", 0o750), ("etc/ssh", 0o755),
                    ("etc/systemd/system", 0o755),
                    ("opt", 0o755), ("home", 0o755), ("var/lib", 0o755), ("var/log", 0o755),
                    ("run", 0o755), ("tmp", 0o1777), ("root", 0o700), ("srv", 0o755)):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    (root / "etc/selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
    for base_file in ("passwd", "group", "shadow"):
        src = Path("/etc") / base_file
        if src.is_file():
            shutil.copy2(src, root / "etc" / base_file)
    group_file = root / "etc/group"
    groups = {line.split(":", 1)[0] for line in group_file.read_text().splitlines() if line}
    gids = {int(line.split(":")[2]) for line in group_file.read_text().splitlines() if line.count(":") >= 3}
    with open(group_file, "a") as f:
        for g in BASE_GROUPS:
            if g not in groups:
                gid = next(i for i in range(900, 1000) if i not in gids)
                gids.add(gid)
                f.write(f"{g}:x:{gid}:\n")
    _image_user(root)
    _image_sshd(root)
    # Flatcar's base image lets the sudo group use sudo without a password.
    sudoers = root / "etc/sudoers.d/00-provision-base"
    sudoers.write_text("%sudo ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod(sudoers, 0o440)
    (root / "var/run").symlink_to("../run")
    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").is_file() else "127.0.0.1 localhost\n"
    (root / "etc/hosts").write_text(hosts.rstrip("\n") + f"\n127.0.1.1 {name}\n")


def _image_sshd(root: Path) -> None:
    """The image's OpenSSH: its own /etc/ssh (the machine's is hidden: an opaque overlay
    directory), a vendor unit that makes the host key on first boot, enabled by preset."""
    ssh = root / "etc/ssh"
    os.setxattr(ssh, "trusted.overlay.opaque", b"y")
    (ssh / "sshd_config").write_text(IMAGE_SSHD_CONFIG)
    vendor = root / IMAGE_UNIT_DIR
    vendor.mkdir(parents=True, exist_ok=True)
    (vendor / SSHD_UNIT).write_text(IMAGE_SSHD_UNIT)
    preset = root / "etc/systemd/system-preset"
    preset.mkdir(parents=True, exist_ok=True)
    (preset / "10-image.preset").write_text(f"enable {SSHD_UNIT}\n")


def _image_user(root: Path) -> None:
    """Flatcar's image ships user `core` (uid 500) in groups sudo and docker; Ignition
    only adds its keys."""
    etc = root / "etc"
    passwd = (etc / "passwd").read_text()
    if "\ncore:" in "\n" + passwd:
        return
    with open(etc / "passwd", "a") as f:
        f.write(f"{IMAGE_USER}:x:{IMAGE_UID}:{IMAGE_UID}:CoreOS Admin:/home/{IMAGE_USER}:/bin/bash\n")
    with open(etc / "shadow", "a") as f:
        f.write(f"{IMAGE_USER}:*:19000:0:99999:7:::\n")
    lines = []
    for line in (etc / "group").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[0] in BASE_GROUPS:
            members = [m for m in fields[3].split(",") if m] + [IMAGE_USER]
            line = ":".join(fields[:3] + [",".join(members)])
        lines.append(line)
    lines.append(f"{IMAGE_USER}:x:{IMAGE_UID}:")
    (etc / "group").write_text("\n".join(lines) + "\n")
    home = root / "home" / IMAGE_USER
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(home, IMAGE_UID, IMAGE_UID)
