"""The commands the roles send instead of pyinfra's files.directory and files.put (one SSH
session each rather than a fact read twice and up to three commands), run by the real sh and
coreutils against a temporary directory: they do what those operations did."""
from __future__ import annotations

import getpass
import os
import stat
import subprocess

from provision.bootstrap import load_role

common = load_role("_common")
secrets = load_role("secrets")


def sh(command: str) -> None:
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_only_directories_missing_or_of_another_mode_differ():
    wanted = {"/a": 0o755, "/b": 0o700, "/c": 0o700, "/d": 0o755}
    current = {"/a": "755:0:0 dir", "/b": "755:0:0 dir", "/c": None,
               "/d": "755:0:0 " + "0" * 64}  # a file where a directory belongs
    assert common.differing_directories(wanted, current) == ["/b", "/c", "/d"]
    assert common.differing_directories({"/a": 0o755}, {"/a": "755:1000:1000 dir"}) == []  # owner left alone


def test_the_directories_command_makes_them_with_their_modes(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    wanted = {str(tmp_path / "new dir" / "deep"): 0o700, str(loose): 0o755}
    sh(common.directories_command(wanted, list(wanted)))
    assert mode_of(tmp_path / "new dir" / "deep") == 0o700 and mode_of(loose) == 0o755
    sh(common.directories_command(wanted, list(wanted)))  # a second run is harmless


def test_the_upload_target_is_private_before_anything_is_written(tmp_path):
    """The upload directory is the SSH user's alone (0700) and the archive's file in it exists
    empty with mode 0600 before the upload; writing it as SFTP does (truncate) keeps 0600."""
    user = getpass.getuser()
    upload_dir = tmp_path / "upload dir"
    upload = upload_dir / "secrets.tar"
    upload.parent.mkdir(mode=0o755)
    upload.write_bytes(b"left from a failed run")
    sh(secrets.prepare_command(str(upload_dir), str(upload), user))
    assert mode_of(upload_dir) == 0o700 and os.stat(upload_dir).st_uid == os.getuid()
    assert mode_of(upload) == 0o600 and upload.read_bytes() == b""
    with open(upload, "wb") as f:  # what an SFTP upload into the existing file does
        f.write(b"archive")
    assert mode_of(upload) == 0o600
