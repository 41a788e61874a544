"""What every command module shares: the consoles, the `--orchestrator` and `--json` options,
the connection to the orchestrator (`connect`, with the root `--config`), tables, durations,
a local PNode's status panel, and file arguments. Imports no command module."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dcnr.client import ADDRESS_ENV, Client, text_files

# soft_wrap: a status line is one line however narrow the terminal (scripts grep it); tables still fit.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Orchestrator = Annotated[str, typer.Option("--orchestrator", envvar=ADDRESS_ENV,
                                           help=f"Orchestrator address HOST:PORT (env {ADDRESS_ENV}; default: the "
                                                "client configuration's, else 127.0.0.1:50052).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT = ""
settings: dict[str, str | None] = {"config": None}  # set by the root command's --config


def connect(orchestrator: str) -> Client:
    """A client of the orchestrator, trusted and authenticated as the client configuration says."""
    return Client(orchestrator or None, config=settings["config"])


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(v) for v in r])
    out.print(t)


def duration(seconds: float) -> str:
    """Seconds for people: 42 s, 7 min 5 s, 3 h 20 min, 2 d 4 h."""
    s = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if s >= size:
            return f"{s // size} {unit} {s % size // sub_size} {sub}"
    return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def status_panel(status: dict[str, Any], running: bool = True) -> Panel:
    """A PNode's status (`dcnr.pnode.status.snapshot`) as one panel: who and where it is, what it holds, and
    what this machine did for the fleet since it started. `running=False`: what a PNode that stopped wrote last."""
    hosted = list(status["vnodes"])
    state = status["state"] if running else f"not running (last update {_clock(status['updated_at'])})"
    if running and status.get("paused_since"):
        state += f" since {_clock(status['paused_since'])}"
    beat = (f"failing: {status['heartbeat_error']}" if status.get("heartbeat_error") else
            _clock(status["last_heartbeat"]) if status.get("last_heartbeat") else "none yet")
    validation = status["validation"]
    rows = [
        ("state", state),
        ("orchestrator", f"{status['orchestrator']} ({status['connection']})"),
        ("id", status["id"]),
        ("serving at", status["address"] or "-"),
        ("machine", f"{status['device']}, {status['threads']} thread{'s' if status['threads'] != 1 else ''}, "
                    f"{_bytes(status['memory_used_bytes'])} of "
                    f"{_bytes(status['memory_budget_bytes'])} for VNodes"),
        ("VNodes", f"{len(hosted)}" + (": " + ", ".join(hosted[:4]) + (" …" if len(hosted) > 4 else "")
                                      if hosted else "")),
        ("computed", f"{status['steps']} steps, {status['micro_batches']} micro-batches, "
                     f"{duration(status['compute_seconds'])} of compute"),
        ("data", f"{_bytes(status['bytes_in'])} in, {_bytes(status['bytes_out'])} out"),
        ("validation", f"{validation['verified_units']} units of others' work verified "
                       f"({duration(validation['verify_seconds'])})"),
        ("since", f"{_clock(status['since'])} (up {duration(status['updated_at'] - status['since'])})"),
        ("last heartbeat", beat),
    ]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, Text(str(value)))
    return Panel(grid, title=f"PNode {status['name']}", title_align="left", expand=False,
                 border_style="green" if running and status["state"] == "active" else "yellow")


def input_files(files: list[Path], extra: list[str]) -> list[Path]:
    """`--files a b c`: the first after the option, the rest as extra arguments; directories are walked."""
    paths = [*files, *map(Path, extra)]
    if not paths:
        raise ValueError("no input files: pass --files FILE [FILE ...]")
    return text_files(paths)
