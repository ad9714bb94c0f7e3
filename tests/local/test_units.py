"""The local provider's unit reader: one mechanism for every unit, as systemd reads them."""
from __future__ import annotations

import os
from pathlib import Path

from provision.providers.local.units import (boot_order, enabled_units, expand_command, host_view,
                                             parse_env_file, parse_unit_text, resolve_unit)


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root, "etc/systemd/system-preset/20-ignition.preset",
          "enable etcd-member.service\nenable kubelet.service\nenable once.service\nenable agent.service\n"
          "enable masked.service\n")
    write(root, "opt/bin/etcd", "#!/bin/sh\n", 0o755)
    write(root, "opt/bin/agent", "#!/bin/sh\n", 0o755)
    write(root, "etc/etcd/etcd.env", "# comment\nETCD_NAME=m0\nETCD_DATA_DIR=\"/var/lib/etcd\"\nFLAGS=--a --b\n")
    write(root, "etc/systemd/system/etcd-member.service",
          "[Unit]\nAfter=network-online.target agent.service\n[Service]\nType=notify\n"
          "EnvironmentFile=/etc/etcd/etcd.env\nEnvironment=\"GREETING=hello world\" LEVEL=2\n"
          "ExecStart=/opt/bin/etcd --name ${ETCD_NAME} $FLAGS \\\n  --host=%H\nRestart=always\nRestartSec=5s\n")
    write(root, "etc/systemd/system/etcd-member.service.d/10-more.conf", "[Service]\nEnvironment=LEVEL=3\n")
    write(root, "etc/systemd/system/kubelet.service", "[Service]\nExecStart=/opt/bin/kubelet --v=2\n")
    write(root, "etc/systemd/system/once.service",
          "[Unit]\nConditionPathExists=!/opt/once.done\n[Service]\nType=oneshot\n"
          "ExecStart=/opt/bin/agent\nExecStartPost=/bin/touch /opt/once.done\n")
    write(root, "etc/systemd/system/agent.service", "[Service]\nExecStartPre=-/opt/bin/absent\nExecStart=/opt/bin/agent\n")
    (root / "etc/systemd/system/masked.service").symlink_to("/dev/null")
    return root


def test_unit_text_sections_repeats_and_continuations():
    unit = parse_unit_text("[Service]\n# c\nExecStart=/a \\\n  b\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n")
    assert unit["Service"]["ExecStart"] == ["/a  b"]
    assert unit["Service"]["Environment"] == ["B=2"]  # an empty assignment resets


def test_expand_command_like_systemd():
    env = {"ONE": "a b", "TWO": "c"}
    argv, ignore = expand_command("-/bin/x ${ONE} $ONE \"q ${TWO}\" %H %%", env, {"H": "h1"})
    assert argv == ("/bin/x", "a b", "a", "b", "q c", "h1", "%")
    assert ignore is True


def test_env_file_quotes_and_comments():
    assert parse_env_file("# x\n\nA=1\nB='two words'\nexport C=\"3\"\n") == [("A", "1"), ("B", "two words"), ("C", "3")]


def test_host_view_maps_root_dirs_and_overlays_etc(tmp_path):
    root = make_root(tmp_path)
    assert host_view(root, "/opt/bin/etcd") == root / "opt/bin/etcd"
    assert host_view(root, "/etc/etcd/etcd.env") == root / "etc/etcd/etcd.env"
    assert host_view(root, "/etc/passwd") == Path("/etc/passwd")  # the machine's, under the overlay
    assert host_view(root, "/usr/bin/env") == Path("/usr/bin/env")


def test_enabled_units_read_from_preset(tmp_path):
    root = make_root(tmp_path)
    assert enabled_units(root)[:2] == ["etcd-member.service", "kubelet.service"]


def test_resolve_gives_command_environment_and_policy(tmp_path):
    root = make_root(tmp_path)
    etcd = resolve_unit(root, "etcd-member.service", "m0")
    assert etcd.skip_reason is None
    assert etcd.exec_start == (("/opt/bin/etcd", "--name", "m0", "--a", "--b", "--host=m0"),)
    env = dict(etcd.environment)
    assert env["ETCD_DATA_DIR"] == "/var/lib/etcd" and env["GREETING"] == "hello world"
    assert env["LEVEL"] == "3"  # the drop-in wins
    assert (etcd.restart, etcd.restart_sec, etcd.type) == ("always", 5.0, "notify")


def test_missing_binary_and_false_condition_skip_with_reason(tmp_path):
    root = make_root(tmp_path)
    assert resolve_unit(root, "kubelet.service", "m0").skip_reason == "binary /opt/bin/kubelet is not present"
    assert resolve_unit(root, "once.service", "m0").skip_reason is None
    write(root, "opt/once.done", "")
    assert "ConditionPathExists=!/opt/once.done" in resolve_unit(root, "once.service", "m0").skip_reason
    # an ignored ExecStartPre (`-`) may be absent
    assert resolve_unit(root, "agent.service", "m0").skip_reason is None
    assert resolve_unit(root, "nothing.service", "m0").skip_reason == "no unit file in the host's root"


def test_boot_order_follows_after_and_drops_masked(tmp_path):
    root = make_root(tmp_path)
    names = [u.name for u in boot_order(root, "m0")]
    assert "masked.service" not in names
    assert names.index("agent.service") < names.index("etcd-member.service")
    assert os.path.islink(root / "etc/systemd/system/masked.service")


def test_a_unit_for_a_missing_user_is_skipped_with_reason(tmp_path):
    root = make_root(tmp_path)
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\netcd:x:232:232::/var/lib/etcd:/sbin/nologin\n")
    write(root, "etc/systemd/system/as-etcd.service", "[Service]\nUser=etcd\nExecStart=/opt/bin/agent\n")
    write(root, "etc/systemd/system/as-ghost.service", "[Service]\nUser=ghost\nExecStart=/opt/bin/agent\n")
    assert resolve_unit(root, "as-etcd.service", "m0").user == "etcd"
    assert resolve_unit(root, "as-etcd.service", "m0").skip_reason is None
    assert resolve_unit(root, "as-ghost.service", "m0").skip_reason == "User=ghost does not exist on the host"


def test_image_units_are_read_and_etc_overrides_them(tmp_path):
    root = make_root(tmp_path)
    write(root, "usr/lib/systemd/system/sshd.service",
          "[Service]\nExecStart=/usr/sbin/sshd -D -e\nRuntimeDirectory=sshd\nRuntimeDirectoryMode=0755\n")
    image = resolve_unit(root, "sshd.service", "m0")
    assert image.exec_start == (("/usr/sbin/sshd", "-D", "-e"),) and image.runtime_directories == ("sshd",)
    write(root, "etc/systemd/system/sshd.service", "[Service]\nExecStart=/usr/sbin/sshd -D -p 2222\n")
    assert resolve_unit(root, "sshd.service", "m0").exec_start == (("/usr/sbin/sshd", "-D", "-p", "2222"),)
