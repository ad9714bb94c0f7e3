"""The wheel is built from pyproject.toml alone, carries the non-Python folders, and an
installation of it renders a cluster from outside the source tree exactly as the checkout does."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

DATA_FOLDERS = ("templates", "ignition", "roles", "vagrant", "examples")


@pytest.mark.slow
def test_an_installed_wheel_renders_from_outside_the_checkout(tmp_path):
    assert not (REPO / "setup.py").exists(), "packaging is pyproject.toml's alone"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", REPO],
                   check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("provision-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in DATA_FOLDERS:
        shipped = {n.split("/", 3)[3] for n in names if n.startswith(f"provision/_data/{folder}/")}
        in_tree = {str(p.relative_to(REPO / folder)) for p in (REPO / folder).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts}
        assert shipped == in_tree, folder

    # A fresh venv that sees this one's dependencies (not its editable provision) gets the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
                   check=True, capture_output=True, timeout=300)

    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "cluster.yaml").write_bytes((REPO / "examples" / "local.yaml").read_bytes())
    installed = subprocess.run([venv / "bin" / "provision", "render", "cluster.yaml", "--out", "out",
                                "--state-dir", "state"], cwd=work, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run([python, "-c", "import provision.resources as r; print(r.data_dir('templates'))"],
                           cwd=work, check=True, capture_output=True, text=True).stdout.strip()
    assert where == f"{site}/provision/_data/templates"

    # The checkout renders the same spec and state to the same bytes: the wheel's folders are the tree's.
    checkout = subprocess.run([sys.executable, "-m", "provision", "render", work / "cluster.yaml",
                               "--out", work / "out-checkout", "--state-dir", work / "state"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert checkout.returncode == 0, checkout.stderr
    rendered = sorted(p.name for p in (work / "out").iterdir())
    assert rendered and rendered == sorted(p.name for p in (work / "out-checkout").iterdir())
    assert any(name.endswith(".ign") for name in rendered)
    for name in rendered:
        assert (work / "out" / name).read_bytes() == (work / "out-checkout" / name).read_bytes(), name
