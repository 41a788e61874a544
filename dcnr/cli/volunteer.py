"""`dcnr pnode status`, `pause` and `resume`: the PNode running on this machine, reached through its state
directory (its status file and pause switch, `dcnr.pnode.status`), not through the orchestrator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from dcnr.cli.common import AsJson, err, out, status_panel
from dcnr.errors import RUNTIME_FAILURE, Conflict, DeadlineExceeded, InvalidArgument
from dcnr.pnode.status import STATUS_INTERVAL, read_status, request_pause, request_resume, running

StateDir = Annotated[Path | None, typer.Option(help="The PNode's state directory (default: the user's data "
                                                    "directory, as `dcnr join` and `dcnr pnode` use).")]
Wait = Annotated[float, typer.Option(help="Seconds to wait for the PNode to confirm (0: do not wait).")]
POLL = 0.25  # seconds between two looks at the status file while waiting


def _directory(state_dir: Path | None) -> Path:
    from dcnr.pnode.agent import default_state_dir

    return state_dir or default_state_dir()


def _not_running(directory: Path) -> Conflict:
    return Conflict(f"no PNode is running with state directory {directory} (start one with `dcnr join`)")


def _until(directory: Path, done: Callable[[dict[str, Any]], bool], wait: float) -> dict[str, Any] | None:
    """The PNode's status once `done(status)` holds; None when `wait` seconds pass first or the PNode stops."""
    deadline = time.monotonic() + wait
    while True:
        status = read_status(directory)
        if status is not None and done(status):
            return status
        if time.monotonic() >= deadline or not running(directory):
            return None
        time.sleep(POLL)


def pnode_status(state_dir: StateDir = None, as_json: AsJson = False) -> None:
    """What the PNode on this machine is doing and has done since it started: orchestrator, connection,
    VNodes, steps, compute time, data in and out, validation work.

    It reads the status file the PNode rewrites every few seconds. When no PNode is running there it shows
    what the last one wrote, says so, and exits with 1.
    """
    directory = _directory(state_dir)
    alive = running(directory)
    status = read_status(directory)
    if status is None:
        if alive:
            raise DeadlineExceeded(f"the PNode in {directory} has not written its status yet: try again in "
                                   f"{STATUS_INTERVAL:g} s")
        raise InvalidArgument(f"no PNode has run with state directory {directory} (start one with `dcnr join`)")
    if as_json:
        print(json.dumps({**status, "running": alive}))
    else:
        out.print(status_panel(status, running=alive))
    if not alive:
        err.print(f"no PNode is running in {directory}: shown is what the last one wrote", markup=False)
        raise typer.Exit(RUNTIME_FAILURE)


def pnode_pause(state_dir: StateDir = None, wait: Wait = 60.0) -> None:
    """Pause the PNode on this machine: it hands its VNodes back and gets no new work until `dcnr pnode
    resume`; it stays registered, and paused if it restarts.

    The orchestrator moves its VNodes to other PNodes; training sessions carry on from their last checkpoint.
    """
    directory = _directory(state_dir)
    if not running(directory):
        raise _not_running(directory)
    request_pause(directory)
    if wait <= 0:
        print(f"pause requested of the PNode in {directory}")
        return
    status = _until(directory, lambda s: s["state"] == "paused" and not s["vnodes"], wait)
    if status is None:
        raise DeadlineExceeded(f"the PNode in {directory} did not confirm its pause within {wait:g} s; it pauses "
                               "as soon as it reaches the orchestrator (see `dcnr pnode status`)")
    print(f"PNode {status['id']} ({status['name']}) paused: it hosts no VNodes and gets no new work until "
          "`dcnr pnode resume`")


def pnode_resume(state_dir: StateDir = None, wait: Wait = 60.0) -> None:
    """Resume the paused PNode on this machine: it may get work again (when the orchestrator next places
    VNodes)."""
    directory = _directory(state_dir)
    withdrawn = request_resume(directory)
    if not running(directory):
        if withdrawn:
            print(f"no PNode is running in {directory}; it will not be paused when it starts")
            return
        raise _not_running(directory)
    if not withdrawn:
        status = read_status(directory)
        if status is not None and status["state"] == "active":
            print(f"PNode {status['id']} ({status['name']}) is not paused")
            return
    if wait <= 0:
        print(f"resume requested of the PNode in {directory}")
        return
    status = _until(directory, lambda s: s["state"] == "active", wait)
    if status is None:
        raise DeadlineExceeded(f"the PNode in {directory} did not confirm it resumed within {wait:g} s; it does as "
                               "soon as it reaches the orchestrator (see `dcnr pnode status`)")
    print(f"PNode {status['id']} ({status['name']}) resumed: it may get work again")
