"""An installed wheel carries the non-Python folders and finds them without the source tree."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_ships_data_folders_and_finds_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", REPO],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("provision-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("templates", "ignition", "roles", "vagrant", "examples"):
        assert any(n.startswith(f"provision/_data/{folder}/") for n in names), folder
    assert "provision/_data/ignition/master.yaml" in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import provision.resources as r; "
             "print(r.data_dir('templates')); print(r.data_dir('roles'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(unpacked)},
                         check=True, capture_output=True, text=True).stdout.split()
    assert all(line.startswith(str(unpacked / "provision" / "_data")) for line in out), out
