"""`dcnr session`: training sessions on an orchestrator — create, start, suspend, resume, list,
listen, history, delete."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict
from typing import Annotated

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, table
from dcnr.client import SessionInfo
from dcnr.errors import Aborted, InvalidArgument

SessionId = Annotated[str, typer.Argument(help="Session id.")]
VALIDATION_HELP = ("How much of the session's work verifiers re-execute: off (none; commitments are still "
                   "cross-checked), sample:P (each work unit with probability P, e.g. sample:0.05; a tenth of that "
                   "for trusted PNodes) or full (every unit, and a referee on a mismatch). Default: the network's "
                   "default, sample:0.05 unless the network says otherwise.")


def session_create(network: Annotated[str, typer.Option(help="Network to train.")],
                   dataset: Annotated[str, typer.Option(help="Dataset to draw batches from.")],
                   steps: Annotated[int, typer.Option(help="Training steps.")],
                   batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 8,
                   micro_batches: Annotated[int, typer.Option(help="Micro-batches per step (pipelined).")] = 1,
                   seed: Annotated[int, typer.Option(help="Data-order seed.")] = 0,
                   checkpoint_every: Annotated[int, typer.Option(
                       help="Checkpoint every K steps (always: at start, on suspend, at the end).")] = 0,
                   start: Annotated[bool, typer.Option(help="Start it at once.")] = False,
                   validation: Annotated[str, typer.Option(metavar="off|sample:P|full", help=VALIDATION_HELP)] = "",
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Create a training session; prints its id."""
    with connect(orchestrator) as c:
        info = c.create_session(network, dataset, steps, batch_size=batch_size, micro_batches=micro_batches,
                                seed=seed, checkpoint_every=checkpoint_every, start=start, validation=validation)
    print(info.id)


def _state(info: SessionInfo) -> None:
    print(f"session {info.id}: {info.state} at step {info.step}/{info.steps}")


def session_start(session_id: SessionId, orchestrator: Orchestrator = DEFAULT) -> None:
    """Start a created session."""
    with connect(orchestrator) as c:
        _state(c.start_session(session_id))


def session_suspend(session_id: SessionId, orchestrator: Orchestrator = DEFAULT) -> None:
    """Stop a running session after its current step (with a checkpoint)."""
    with connect(orchestrator) as c:
        _state(c.suspend_session(session_id))


def session_resume(session_id: SessionId, orchestrator: Orchestrator = DEFAULT) -> None:
    """Continue a suspended session where it stopped."""
    with connect(orchestrator) as c:
        _state(c.start_session(session_id))


def session_delete(session_id: SessionId, orchestrator: Orchestrator = DEFAULT) -> None:
    """Stop and forget a session (the network keeps what it learned)."""
    with connect(orchestrator) as c:
        c.delete_session(session_id)
    print(f"deleted {session_id}")


def session_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Training sessions and their progress."""
    with connect(orchestrator) as c:
        rows = [asdict(s) for s in c.list_sessions()]
    if as_json:
        print(json.dumps(rows))
        return
    table("sessions", ["id", "network", "dataset", "state", "step", "batch", "validation", "error"],
          [[r["id"], r["network"], r["dataset"], r["state"], f"{r['step']}/{r['steps']}",
            f"{r['batch_size']}×{r['micro_batches']}", r["validation"] or "default", r["error"]] for r in rows])


def session_listen(session_id: SessionId,
                   as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event per line.")]
                   = False,
                   from_step: Annotated[int | None, typer.Option(
                       help="First replay the session's kept step events from this step on (kept across "
                            "orchestrator restarts), then follow.")] = None,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Follow a session's step events until it completes or fails (exit 1 if it fails)."""
    last = None
    with connect(orchestrator) as c:
        for ev in c.listen_session(session_id, from_step=from_step):
            last = ev
            if as_json:
                print(json.dumps(asdict(ev)), flush=True)
            elif ev.state in ("running", "completed") and ev.loss is not None:
                lrs = " ".join(f"{k}={v:.2e}" for k, v in sorted(ev.learning_rates.items()))
                print(f"step {ev.step}/{ev.steps} loss {ev.loss:.4f} {ev.tokens_per_second:,.0f} tok/s "
                      f"{ev.duration_seconds * 1000:.0f} ms {lrs}".rstrip(), flush=True)
            else:
                print(f"session {ev.session}: {ev.state} at step {ev.step}/{ev.steps}"
                      + (f": {ev.error}" if ev.error else ""), flush=True)
    if last is not None and last.state == "failed":
        raise Aborted(f"session {session_id} failed: {last.error}")


HISTORY_COLUMNS = ["step", "at", "loss", "held_out_loss", "tokens_per_second", "duration_seconds"]


def session_history(session_id: SessionId,
                    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header line: the columns "
                                                         f"{', '.join(HISTORY_COLUMNS)}, then one per learning-rate "
                                                         "metric; `at` in unix seconds.")] = False,
                    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of step events.")] = False,
                    from_step: Annotated[int, typer.Option(help="Only steps from this one on.")] = 0,
                    orchestrator: Orchestrator = DEFAULT) -> None:
    """A session's kept step history: one row per step (loss, held-out loss once evaluated, tokens/s, duration,
    learning rates), kept across orchestrator restarts until the session is deleted."""
    if as_csv and as_json:
        raise InvalidArgument("--csv and --json exclude each other")
    with connect(orchestrator) as c:
        events = c.session_history(session_id, from_step=from_step)
    if as_json:
        print(json.dumps([asdict(ev) for ev in events]))
        return
    rates = sorted({name for ev in events for name in ev.learning_rates})
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS + rates)
        for ev in events:
            writer.writerow([ev.step, repr(ev.at), _number(ev.loss), _number(ev.held_out_loss),
                             repr(ev.tokens_per_second), repr(ev.duration_seconds),
                             *(_number(ev.learning_rates.get(name)) for name in rates)])
        return
    table(f"session {session_id}", ["step", "at", "loss", "held-out", "tok/s", "ms", *rates], [
        [ev.step, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.at)), _fixed(ev.loss),
         _fixed(ev.held_out_loss), f"{ev.tokens_per_second:,.0f}", f"{ev.duration_seconds * 1000:.0f}",
         *(f"{ev.learning_rates[name]:.2e}" if name in ev.learning_rates else "" for name in rates)]
        for ev in events])


def _number(value: float | None) -> str:
    """A value for CSV: every digit kept; empty when there is none."""
    return "" if value is None else repr(value)


def _fixed(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"

