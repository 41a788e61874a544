"""`dcnr checkpoint`: the checkpoints training sessions wrote — list, export."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, table


def checkpoint_list(session_id: Annotated[str, typer.Argument(help="Session id.")], as_json: AsJson = False,
                    orchestrator: Orchestrator = DEFAULT) -> None:
    """A session's checkpoints in storage, oldest first."""
    with connect(orchestrator) as c:
        found = c.list_checkpoints(session_id)
    rows: list[dict[str, Any]] = [
        {"session": m.session, "network": m.network, "session_step": m.session_step, "step": m.step,
         "bytes": m.bytes, "created_at": datetime.fromtimestamp(m.created_at, UTC).isoformat(timespec="seconds")}
        for m in found]
    if as_json:
        print(json.dumps(rows))
        return
    table(f"checkpoints of session {session_id}", ["session step", "network step", "size", "written"],
          [[r["session_step"], r["step"], f"{r['bytes'] / 2**20:.1f} MiB", r["created_at"]] for r in rows])


def checkpoint_export(session_id: Annotated[str, typer.Argument(help="Session id.")],
                      out_path: Annotated[Path, typer.Option("--out", help="Where to write the .safetensors file.")],
                      step: Annotated[int | None, typer.Option(
                          help="Session step (default: the newest verified checkpoint, else the latest).")] = None,
                      orchestrator: Orchestrator = DEFAULT) -> None:
    """Write a checkpoint as one artifact: parameters keyed <node_id>.<param>, optimizer state, the network
    YAML, training config and dataset hash. `dcnr network import` and `LocalExecutor.from_artifact` read it."""
    from dcnr.artifact import artifact_metadata

    with connect(orchestrator) as c:
        c.export_checkpoint(session_id, out_path, session_step=step)
    meta = artifact_metadata(out_path.read_bytes())
    print(f"{out_path}: session step {meta.get('training.session_step')} (network step {meta.get('step')})"
          f"{'' if meta.get('verified') == 'true' else ', not verified by validation'}")
