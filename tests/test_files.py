"""files.batched_sync: new files are synced together at the end of the block; a file that
replaces another is synced before its rename, inside a block or not."""
from __future__ import annotations

import os
import stat

import pytest

from provision import files


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fsync made, as the path of the file or directory it was made on."""
    made: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        made.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return made


def test_new_files_in_a_batch_are_synced_at_its_end(tmp_path, fsyncs):
    names = [tmp_path / f"key{i}" for i in range(5)]
    with files.batched_sync():
        for i, path in enumerate(names):
            files.write_file_atomic(path, f"secret {i}".encode())
            assert path.read_bytes() == f"secret {i}".encode()  # readable at once
        assert fsyncs == []
    assert sorted(fsyncs[:5]) == sorted(str(p) for p in names)
    assert fsyncs[5:] == [str(tmp_path)]  # the directory once, after its files
    for path in names:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_replaced_file_is_synced_before_its_rename_even_in_a_batch(tmp_path, fsyncs):
    path = tmp_path / "ca.key"
    path.write_bytes(b"old")
    seen_at_rename: list[list[str]] = []
    with files.batched_sync():
        files.write_file_atomic(path, b"new", before_rename=lambda tmp: seen_at_rename.append(list(fsyncs)))
        assert len(seen_at_rename[0]) == 1 and seen_at_rename[0][0].endswith(".tmp")
        files.write_file_atomic(path, b"newer")  # replaces: synced now, not at the end
        assert len(fsyncs) == 4 and fsyncs[-1] == str(tmp_path)
    assert path.read_bytes() == b"newer"


def test_outside_a_batch_each_file_and_its_directory_are_synced(tmp_path, fsyncs):
    files.write_file_atomic(tmp_path / "a", b"1")
    assert len(fsyncs) == 2 and fsyncs[1] == str(tmp_path)


def test_a_file_removed_inside_the_batch_does_not_fail_its_end(tmp_path, fsyncs):
    with files.batched_sync():
        files.write_file_atomic(tmp_path / "gone", b"1")
        (tmp_path / "gone").unlink()
        files.write_file_atomic(tmp_path / "kept", b"2")
    assert fsyncs == [str(tmp_path / "kept"), str(tmp_path)]
