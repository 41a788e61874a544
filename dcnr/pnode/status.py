"""What a PNode tells the machine it runs on: its status file, and the switch that pauses it.

Owns the files a running PNode shares with `dcnr pnode status`, `pause` and `resume` in its state
directory: `status.json`, which the PNode rewrites atomically every `STATUS_INTERVAL` seconds (and
at once when it pauses or resumes) with what it is doing and what it has done since it started;
and `paused`, whose presence asks it to pause (it stays until `resume` removes it, across restarts
too). Whether a PNode runs there at all only the state directory's lock tells (`running`): a
status file outlives the process that wrote it. Knows nothing of the transport or the CLI.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcnr.storage.files import write_atomic

if TYPE_CHECKING:
    from dcnr.pnode.agent import PNode

log = logging.getLogger("dcnr.pnode")

STATUS_FILE = "status.json"
PAUSE_FILE = "paused"
LOCK_FILE = ".lock"  # held (flock) by the PNode that uses the directory, for its whole life
STATUS_FORMAT = "dcnr-pnode-status/1"
STATUS_INTERVAL = 2.0  # seconds between two writes of the status file
PAUSE_POLL = 1.0  # seconds between two looks at the pause file (in the heartbeat loop)


def running(state_dir: Path) -> bool:
    """Whether a PNode holds `state_dir` now (the lock of a process that died is released with it)."""
    try:
        handle = open(state_dir / LOCK_FILE, "rb")  # noqa: SIM115 - closed below; never created or truncated
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def pause_requested(state_dir: Path) -> bool:
    return (state_dir / PAUSE_FILE).exists()


def request_pause(state_dir: Path) -> None:
    """Ask the PNode of `state_dir` to pause (it looks every `PAUSE_POLL` s, and when it starts)."""
    write_atomic(state_dir / PAUSE_FILE, json.dumps({"requested_at": time.time()}).encode())


def request_resume(state_dir: Path) -> bool:
    """Withdraw a pause request; returns whether there was one."""
    try:
        (state_dir / PAUSE_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The last status a PNode wrote in `state_dir` (None when none ever did, or it is unreadable)."""
    try:
        doc = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == STATUS_FORMAT else None


def state_of(node: PNode) -> str:
    """What the PNode is doing, in a word: starting, active, pausing (asked, the orchestrator not yet told),
    paused, resuming, reconnecting (its last heartbeat failed) or stopped."""
    if node.stopped:
        return "stopped"
    if not node.last_beat:
        return "starting"
    if node.beat_error:
        return "reconnecting"
    if node.paused:
        return "paused" if node.told_paused else "pausing"
    return "resuming" if node.told_paused else "active"


def snapshot(node: PNode) -> dict[str, Any]:
    """The status of a `dcnr.pnode.agent.PNode`: who it is, where it is connected, what it holds now and what it
    did since it started (compute: VNodes and verification; bytes: tensor data of hops in and out)."""
    runtime = node.runtime.made if node.runtime is not None else None  # not made yet: an idle PNode stays light
    stats: dict[str, float] = dict(runtime.stats) if runtime is not None else {}
    hosted = [f"{net}/{v.id}" for net, v in runtime.host.local()] if runtime is not None else []
    return {
        "format": STATUS_FORMAT,
        "pid": os.getpid(),
        "orchestrator": node.orchestrator,
        "id": node.id,
        "name": node.name,
        "address": node.address,
        "connection": f"relayed via {node.relay}" if node.relay else "direct",
        "state": state_of(node),
        "paused": node.paused,
        "paused_since": node.paused_since or None,
        "device": node.hardware["device"],
        "threads": node.threads,
        "memory_budget_bytes": int(node.hardware["memory_budget_bytes"]),
        "memory_used_bytes": int(runtime.host.memory_used) if runtime is not None else 0,
        "vnodes": hosted,
        "steps": int(stats.get("steps", 0)),
        "micro_batches": int(stats.get("micro_batches", 0)),
        "bytes_in": int(stats.get("tensor_bytes_received", 0)),
        "bytes_out": int(stats.get("tensor_bytes_sent", 0)),
        "compute_seconds": node.compute_seconds(),
        "refused": int(stats.get("refused", 0)),
        "validation": {"verified_units": int(stats.get("verified_units", 0)),
                       "verify_seconds": stats.get("verify_seconds", 0.0),
                       "commit_seconds": stats.get("commit_seconds", 0.0)},
        "since": node.started_at,
        "last_heartbeat": node.last_beat or None,
        "heartbeat_error": node.beat_error,
        "updated_at": time.time(),
    }


class StatusWriter:
    """Keeps `status.json` of a PNode's state directory current, on a thread of its own, from `start` to `stop`
    (which writes the last one, "stopped")."""

    def __init__(self, node: PNode, interval: float = STATUS_INTERVAL) -> None:
        self.node = node
        self.path = Path(node.state_dir) / STATUS_FILE
        self.interval = interval
        self._now = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pnode-status", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Write it now (something a reader waits for changed)."""
        self._now.set()

    def stop(self) -> None:
        self._stop.set()
        self._now.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.write()

    def write(self) -> None:
        try:
            write_atomic(self.path, json.dumps(snapshot(self.node), indent=1).encode())
            self._failing = False
        except Exception as exc:  # a full disk must not stop the PNode (nor this thread); said once
            if not self._failing:
                log.warning("could not write %s: %s", self.path, exc)
            self._failing = True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.write()
            self._now.wait(self.interval)
            self._now.clear()
