"""`dcnr join`, `dcnr pnode status|pause|resume` on a volunteer's machine, against a real `dcnr orchestrator`
process: the first join sizes the PNode within the caps and keeps the settings in the default state
directory; a plain `dcnr join` joins again with them and options given replace them; the status file and
`pause` tell whether a PNode runs there."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dcnr.cli.main import app
from dcnr.cluster import LocalCluster
from dcnr.pnode.settings import SETTINGS_FILE

VOLUNTEER = "v"


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """The volunteer's XDG data home: the PNode's default state directory is HOME/dcnr/pnode."""
    return tmp_path / "home"


@pytest.fixture()
def fleet(tmp_path: Path, home: Path) -> Iterator[LocalCluster]:
    """An orchestrator process (1 s heartbeats) whose one PNode, `v`, is started by `dcnr join`."""
    cluster = LocalCluster(tmp_path / "fleet", [VOLUNTEER], env={**os.environ, "XDG_DATA_HOME": str(home)},
                           pnode_command=lambda address, name: [sys.executable, "-m", "dcnr.cli.main", "join"])
    state = home / "dcnr" / "pnode"
    state.mkdir(parents=True, mode=0o700)
    shutil.copy(cluster.pnode_dir(VOLUNTEER) / "key.pem", state / "key.pem")  # the id the cluster knows `v` by
    try:
        cluster.start_orchestrator()
        yield cluster
    finally:
        cluster.close()


def dcnr(fleet: LocalCluster, home: Path, *args: str) -> tuple[int, str, str]:
    """`dcnr ARGS` on the volunteer's machine (as the operator, for `pnode list`): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, list(args), env={"DCNR_CONFIG": str(fleet.admin_config), "COLUMNS": "200",
                                                      "XDG_DATA_HOME": str(home)})
    return result.exit_code, result.stdout, result.stderr


def joined(fleet: LocalCluster, *args: str) -> float:
    """Start `dcnr join ARGS` as the volunteer's PNode; the seconds until the orchestrator holds it alive."""
    started = time.monotonic()
    fleet.start_pnode(VOLUNTEER, *args)
    fleet.wait_for_pnodes([VOLUNTEER], timeout=120)
    return time.monotonic() - started


def listed(fleet: LocalCluster, home: Path) -> dict[str, Any]:
    code, out, err = dcnr(fleet, home, "pnode", "list", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    return dict(row)


def status_of(fleet: LocalCluster, home: Path) -> dict[str, Any]:
    """`dcnr pnode status --json` while a PNode runs ({} before it wrote any)."""
    code, out, _ = dcnr(fleet, home, "pnode", "status", "--json")
    return dict(json.loads(out)) if code == 0 else {}


def stop(fleet: LocalCluster) -> None:
    fleet.signal(VOLUNTEER, signal.SIGTERM)
    fleet.procs[VOLUNTEER].wait(60)


@pytest.mark.slow
def test_join_sizes_within_the_caps_keeps_the_settings_and_a_plain_join_rejoins_with_them(
        fleet: LocalCluster, home: Path) -> None:
    state = home / "dcnr" / "pnode"
    code, _, err = dcnr(fleet, home, "join")
    assert code == 2 and "nothing saved" in err and "dcnr join HOST:PORT --ca-fingerprint" in err
    assert len(err.strip().splitlines()) == 1

    seconds = joined(fleet, fleet.address, "--ca-fingerprint", fleet.ca_fingerprint, "--max-memory", "512M",
                     "--max-threads", "1", "--name", "volunteer")
    print(f"dcnr join -> registered: {seconds:.1f} s")
    row = listed(fleet, home)
    assert (row["id"], row["name"], row["state"]) == (fleet.ids[VOLUNTEER], "volunteer", "alive")
    assert (row["hardware"]["memory_budget_bytes"], row["hardware"]["threads"]) == (512 * 10**6, 1)
    assert row["address"].startswith("127.0.0.1:")  # an orchestrator on this machine: served on loopback
    kept = json.loads((state / SETTINGS_FILE).read_text())
    assert (kept["orchestrator"], kept["ca_fingerprint"], kept["max_memory"], kept["max_threads"], kept["name"]) == (
        fleet.address, fleet.ca_fingerprint, 512 * 10**6, 1, "volunteer")
    assert "joined " + fleet.address in fleet.log(VOLUNTEER)

    fleet.wait_for(lambda: status_of(fleet, home).get("state") == "active", "the status file saying it is active",
                   timeout=60)
    status = status_of(fleet, home)
    assert (status["running"], status["id"], status["name"], status["orchestrator"], status["connection"]) == (
        True, fleet.ids[VOLUNTEER], "volunteer", fleet.address, "direct")
    assert (status["paused"], status["vnodes"], status["threads"], status["memory_budget_bytes"]) == (
        False, [], 1, 512 * 10**6)
    code, out, _ = dcnr(fleet, home, "pnode", "status")
    assert code == 0 and "PNode volunteer" in out and "active" in out and "(direct)" in out

    stop(fleet)
    code, out, err = dcnr(fleet, home, "pnode", "status", "--json")
    assert code == 1 and json.loads(out)["running"] is False and "no PNode is running" in err
    code, _, err = dcnr(fleet, home, "pnode", "pause")
    assert code == 2 and "no PNode is running" in err and len(err.strip().splitlines()) == 1
    assert not (state / "paused").exists()

    joined(fleet)  # plain: everything from the kept settings
    row = listed(fleet, home)
    assert (row["name"], row["hardware"]["memory_budget_bytes"], row["hardware"]["threads"]) == (
        "volunteer", 512 * 10**6, 1)
    stop(fleet)

    joined(fleet, "--max-memory", "256M")  # what is given replaces what was kept, and is kept
    row = listed(fleet, home)
    assert (row["name"], row["hardware"]["memory_budget_bytes"]) == ("volunteer", 256 * 10**6)
    assert json.loads((state / SETTINGS_FILE).read_text())["max_memory"] == 256 * 10**6


def test_joining_another_orchestrator_needs_its_fingerprint(tmp_path: Path) -> None:
    state = tmp_path / "pnode"
    state.mkdir()
    (state / SETTINGS_FILE).write_text(json.dumps({"format": "dcnr-join/1", "orchestrator": "127.0.0.1:1",
                                                   "ca_fingerprint": "SHA256:ab"}))
    result = CliRunner().invoke(app, ["join", "127.0.0.1:2", "--state-dir", str(state)])
    assert result.exit_code == 2 and "needs its --ca-fingerprint" in result.stderr


def test_resume_of_a_pnode_that_is_not_running_withdraws_a_pause_left_behind(tmp_path: Path) -> None:
    (tmp_path / "paused").write_text("{}")  # paused, then stopped: it would start paused
    result = CliRunner().invoke(app, ["pnode", "resume", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0 and "will not be paused when it starts" in result.stdout
    assert not (tmp_path / "paused").exists()
    result = CliRunner().invoke(app, ["pnode", "resume", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no PNode is running" in result.stderr
    result = CliRunner().invoke(app, ["pnode", "status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no PNode has run" in result.stderr


@pytest.mark.slow
def test_in_a_terminal_the_pnode_shows_one_live_panel_instead_of_log_lines(fleet: LocalCluster, home: Path) -> None:
    """stdout a TTY: after start-up the PNode redraws one status panel in place (no INFO lines scroll by) until
    SIGTERM, and stops cleanly."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dcnr.cli.main", "join", fleet.address, "--ca-fingerprint",
                             fleet.ca_fingerprint, "--name", "desk"], stdin=subprocess.DEVNULL, stdout=terminal,
                            stderr=terminal, env={**os.environ, "XDG_DATA_HOME": str(home), "COLUMNS": "120"},
                            start_new_session=True)
    os.close(terminal)
    seen = b""

    def read_until(done: Callable[[bytes], bool], timeout: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while not done(seen):
            assert time.monotonic() < deadline, f"the terminal showed:\n{seen.decode(errors='replace')[-3000:]}"
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(controller, 65536)
                except OSError:  # the PNode closed the terminal
                    assert proc.poll() is not None
                    break

    try:
        read_until(lambda out: out.count(b"PNode desk") >= 3 and b"active" in out, 120)
        panel = seen[seen.index(b"PNode desk"):]
        assert b"\x1b[" in panel and b"INFO" not in panel, panel.decode(errors="replace")  # redrawn, not scrolled
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        read_until(lambda out: b"stopped" in out, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    fleet.wait_for(lambda: not fleet.client.list_pnodes(timeout=5), "the PNode unregistering", timeout=30)
