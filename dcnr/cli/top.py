"""`dcnr top`: the fleet and its training at a glance, refreshed in the terminal (for operators without a
browser; the dashboard shows more)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dcnr.cli.common import DEFAULT, Orchestrator, connect, out
from dcnr.client import Client, PNodeInfo, SessionInfo, StepEvent
from dcnr.errors import DcnrError, InvalidArgument, PermissionDenied, Unauthenticated

SESSIONS_SHOWN = 10  # the running sessions, then the newest others, up to this many


def top(once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (for scripts).")] = False,
        interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
        orchestrator: Orchestrator = DEFAULT) -> None:
    """Watch the fleet and its training: PNodes (state, direct or relayed, load, VNodes, compute) and sessions (step,
    loss, tokens/s), refreshed every --interval seconds until Ctrl-C."""
    if interval < 0.2:
        raise InvalidArgument(f"--interval must be at least 0.2 seconds, got {interval:g}")
    with connect(orchestrator) as c:
        if once:
            out.print(_frame(c))
            return
        try:
            with Live(_frame(c), console=out, auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(_frame(c), refresh=True)
        except KeyboardInterrupt:
            return


def _frame(c: Client) -> Group:
    """One view of the orchestrator behind `c`: a summary line, the PNodes, the sessions."""
    health = c.health(timeout=10)
    sessions = c.list_sessions()
    shown = _shown(sessions)
    latest = {s.id: _latest(c, s) for s in shown}
    pnodes, why = _readable(c.list_pnodes)
    relays, _ = _readable(c.list_relays)
    relay_of = {p: r.id for r in relays or [] for p in r.pnodes}
    running = [s for s in sessions if s.state == "running"]
    throughput = sum(ev.tokens_per_second for s in running if (ev := latest.get(s.id)) is not None)
    alive = sum(1 for p in pnodes or [] if p.state == "alive")
    summary = Text.assemble(
        (f"dcnr {health.software_version}", "bold"), f" at {c.address} (protocol {health.protocol_version})  ",
        f"{time.strftime('%H:%M:%S')}  ",
        ("PNodes ", "bold"), f"{alive}/{len(pnodes)} alive  " if pnodes is not None else "hidden  ",
        ("sessions ", "bold"), f"{len(running)} running  ", ("throughput ", "bold"), f"{throughput:,.0f} tok/s")
    return Group(summary, _pnodes(pnodes, why, relay_of), _sessions(shown, latest))


def _readable(call: Callable[[], list[Any]]) -> tuple[list[Any] | None, str]:
    """What a listing returns, or None and why when this caller may not read it."""
    try:
        return call(), ""
    except (Unauthenticated, PermissionDenied) as exc:
        return None, str(exc)


def _shown(sessions: list[SessionInfo]) -> list[SessionInfo]:
    running = [s for s in sessions if s.state == "running"]
    others = [s for s in sessions if s.state != "running"]
    return (running + others[::-1])[:SESSIONS_SHOWN]


def _latest(c: Client, s: SessionInfo) -> StepEvent | None:
    if s.step < 1:
        return None
    try:
        found = c.session_history(s.id, from_step=s.step, limit=1)
    except DcnrError:  # deleted meanwhile
        return None
    return found[-1] if found else None


def _state(p: PNodeInfo) -> str:
    if p.state != "alive":
        return p.state
    if getattr(p, "paused", False):  # where the orchestrator reports it
        return "paused"
    return "quarantined" if p.quarantined_until > time.time() else "alive"


def _pnodes(pnodes: list[PNodeInfo] | None, why: str, relay_of: dict[str, str]) -> Table:
    t = _table("PNodes", ["id", "name", "state", "connection"], ["load", "VNodes", "compute", "seen"])
    if pnodes is None:
        t.add_row("", "", why)
        return t
    now = time.time()
    for p in pnodes:
        connection = (f"relayed via {relay_of.get(p.id) or p.address.partition('/')[0]}" if "/" in p.address
                      else "direct")
        compute = getattr(p, "compute_seconds", None)  # where the orchestrator reports it
        t.add_row(p.id, p.name, _state(p), connection, f"{p.load:.1f}", str(len(p.vnodes)),
                  _duration(compute) if compute is not None else "–", f"{max(0.0, now - p.last_seen):.0f}s ago")
    return t


def _sessions(sessions: list[SessionInfo], latest: dict[str, StepEvent | None]) -> Table:
    t = _table("sessions", ["id", "network", "state"], ["step", "loss", "held-out", "tok/s", "step time"])
    for s in sessions:
        ev = latest.get(s.id)
        t.add_row(s.id, s.network, s.state, f"{s.step}/{s.steps}",
                  f"{ev.loss:.4f}" if ev is not None and ev.loss is not None else "",
                  f"{ev.held_out_loss:.4f}" if ev is not None and ev.held_out_loss is not None else "",
                  f"{ev.tokens_per_second:,.0f}" if ev is not None else "",
                  f"{ev.duration_seconds * 1000:.0f} ms" if ev is not None else "")
    return t


def _table(title: str, text: list[str], numbers: list[str]) -> Table:
    """A table with the `text` columns, then the `numbers` columns (right-aligned)."""
    t = Table(title=title, title_justify="left")
    for column in text:
        t.add_column(column)
    for column in numbers:
        t.add_column(column, justify="right")
    return t


def _duration(seconds: float) -> str:
    """1m 05s, 2h 03m, 45.2s."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"
