"""Atomic writes: the final name appears only on success, with normal permissions."""

import os
import stat

import pytest

from ditkit.atomic import atomic_folder, atomic_path, atomic_write_text


def test_success_renames_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644


class _DiskLog:
    """Records fsyncs (by path) and renames, in order, while delegating to the real calls."""

    def __init__(self, monkeypatch):
        self.events: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src, dst):
            self.events.append(("rename", str(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def position(self, kind, path):
        return self.events.index((kind, str(path)))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name file descriptors")
def test_file_is_flushed_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    log = _DiskLog(monkeypatch)
    target = tmp_path / "out.txt"
    atomic_write_text(target, "hello")
    synced = [path for kind, path in log.events if kind == "fsync"]
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".out.txt."))  # the temporary file
    assert log.events.index(("fsync", synced[0])) < log.position("rename", target)
    assert log.position("rename", target) < log.position("fsync", tmp_path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name file descriptors")
def test_folder_contents_are_flushed_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    log = _DiskLog(monkeypatch)
    with atomic_folder(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"123")
    assert sorted(p.name for p in target.rglob("*")) == ["sub", "weights.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # the old folder is gone
    renamed = log.position("rename", target)
    flushed = [path for kind, path in log.events[:renamed] if kind == "fsync"]
    assert any(path.endswith("/sub/weights.bin") for path in flushed)
    assert any(path.endswith("/sub") for path in flushed)
    assert log.position("fsync", tmp_path) > renamed


def test_failed_folder_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "ckpt") as tmp:
            (tmp / "half.bin").write_bytes(b"1")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
