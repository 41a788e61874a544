"""`dcnr validation list`: the validation log — checks of PNodes' work, their verdicts, and operators'
changes of a PNode's standing."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, table


def validation_list(session: Annotated[str, typer.Argument(help="Only this session's events (default: all).")]
                    = "",
                    network: Annotated[str, typer.Option(help="Only this network's events.")] = "",
                    limit: Annotated[int, typer.Option(help="The newest this many events.")] = 1000,
                    as_json: AsJson = False,
                    orchestrator: Orchestrator = DEFAULT) -> None:
    """Validation events, oldest first: who was checked, by whom, and the verdict."""
    with connect(orchestrator) as c:
        rows = [asdict(e) for e in c.validation_events(session, network, limit)]
    if as_json:
        print(json.dumps(rows))
        return
    table("validation events", ["time", "session", "step", "unit", "accused", "verifier", "referee", "verdict",
                                "detail"],
          [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"])), r["session"],
            r["step"] if r["network"] else "",  # an operator's trust or release concerns no step
            r["unit"], r["accused"], r["verifier"], r["referee"], r["verdict"], r["detail"]] for r in rows])
