"""`write_atomic`: the whole new file or the old one, never a torn write or a stray temporary file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcnr.storage import files
from dcnr.storage.files import write_atomic


def test_bytes_and_chunks_are_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "f.bin"  # missing directories are made
    assert write_atomic(target, b"hello") == 5
    assert target.read_bytes() == b"hello"
    chunks = [b"a" * 1000, b"", bytearray(b"bc"), memoryview(b"def")]
    assert write_atomic(target, iter(chunks)) == 1005  # replaces the old content whole
    assert target.read_bytes() == b"a" * 1000 + b"bcdef"
    assert write_atomic(target, b"") == 0 and target.read_bytes() == b""
    assert os.listdir(target.parent) == ["f.bin"]


def test_a_failure_mid_stream_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new, "
        yield b"half written"
        raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        write_atomic(target, chunks())
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_failed_fsync_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fail(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_the_file_is_synced_before_the_rename_and_the_directory_after(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    events: list[tuple[str, bool]] = []  # (what was synced, did the target exist then)
    real_fsync, real_fsync_dir = os.fsync, files.fsync_dir

    def fsync(fd: int) -> None:
        events.append(("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file", target.exists()))
        real_fsync(fd)

    def fsync_dir(directory: str | Path) -> None:
        events.append((f"dir {Path(directory).name}", target.exists()))
        real_fsync_dir(directory)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    write_atomic(target, b"data")
    assert events[0] == ("file", False)  # the data is on disk before the name points at it
    assert events[1] == (f"dir {tmp_path.name}", True)  # then the rename itself is made durable
    assert events[2:] == [("dir", True)]
