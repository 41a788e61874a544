"""The files a PNode shares with its own machine: whether one runs (the state directory's lock, whoever
holds it), the pause switch, and a status file that only a PNode's status format passes for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dcnr.pnode.status import (
    LOCK_FILE,
    STATUS_FILE,
    pause_requested,
    read_status,
    request_pause,
    request_resume,
    running,
)

HOLD = """
import fcntl, sys, time
handle = open(sys.argv[1], "wb")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_pnode_runs_exactly_while_a_process_holds_the_lock(tmp_path: Path) -> None:
    assert not running(tmp_path)  # no lock file at all
    (tmp_path / LOCK_FILE).write_bytes(b"")
    assert not running(tmp_path)  # a lock file nobody holds: a PNode that stopped or died
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK_FILE)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert running(tmp_path)
    finally:
        holder.communicate("", timeout=30)
    assert not running(tmp_path)  # released with its process


def test_the_pause_switch(tmp_path: Path) -> None:
    assert not pause_requested(tmp_path) and not request_resume(tmp_path)
    request_pause(tmp_path)
    request_pause(tmp_path)  # twice is once
    assert pause_requested(tmp_path)
    assert request_resume(tmp_path) and not pause_requested(tmp_path)


def test_only_a_status_file_in_the_pnode_format_is_read(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text("{torn")
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text(json.dumps({"format": "something else"}))
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text(json.dumps({"format": "dcnr-pnode-status/1", "id": "pn-x"}))
    assert read_status(tmp_path) == {"format": "dcnr-pnode-status/1", "id": "pn-x"}
