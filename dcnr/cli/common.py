"""What every command module shares: the consoles, the `--orchestrator` and `--json` options,
the connection to the orchestrator (`connect`, with the root `--config`), tables, durations,
and file arguments. Imports no command module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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


def input_files(files: list[Path], extra: list[str]) -> list[Path]:
    """`--files a b c`: the first after the option, the rest as extra arguments; directories are walked."""
    paths = [*files, *map(Path, extra)]
    if not paths:
        raise ValueError("no input files: pass --files FILE [FILE ...]")
    return text_files(paths)
