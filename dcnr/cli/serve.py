"""`dcnr orchestrator` and `dcnr pnode`: the two long-running processes."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from dcnr.cli import logs

HEARTBEAT_HELP = "Seconds between PNode heartbeats; a PNode is dead after 3 missed beats."
KEEP_HELP = ("Checkpoints kept per training session: after each new one, older ones beyond the newest N are deleted "
             "(exported ones stay) and blobs no checkpoint names are collected. The default, 5, leaves room to roll "
             "back past a fault found a few checkpoints late while storage stays bounded however long a session "
             "trains (each checkpoint holds every parameter and optimizer moment). 0 keeps all.")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (installed before start-up, so no signal kills us half-way)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _wait(stop: threading.Event) -> None:
    while not stop.wait(1.0):
        pass


def orchestrator(
    port: Annotated[int, typer.Option(help="Port to serve gRPC on.")] = 50052,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    state_dir: Annotated[Path, typer.Option(help="Where the SQLite state lives (PNodes, networks, sessions).")]
    = Path("dcnr-state"),
    heartbeat_interval: Annotated[float, typer.Option(help=HEARTBEAT_HELP)] = 30.0,
    step_timeout: Annotated[float, typer.Option(help="Seconds a training step or request may take.")] = 600.0,
    max_message_mb: Annotated[int, typer.Option(help="Largest gRPC message accepted or sent, in MiB.")] = 256,
    storage: Annotated[str | None, typer.Option(help="Checkpoints, vocabularies and datasets: file:///path or "
                                                     "s3://bucket/prefix (default: STATE_DIR/storage).")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="Endpoint of an S3-compatible store.")] = None,
    keep_checkpoints: Annotated[int, typer.Option(help=KEEP_HELP)] = 5,
    log_format: Annotated[str, typer.Option(help="text, or json (one object per line).")] = "text",
) -> None:
    """Run the orchestrator: PNode registry, placement, networks, sessions, data (stops on SIGTERM/Ctrl-C)."""
    from dcnr.orchestrator.app import Orchestrator

    logs.configure(log_format)
    if heartbeat_interval <= 0:
        raise ValueError(f"--heartbeat-interval must be positive, got {heartbeat_interval}")
    stop = _stop_on_signals()
    if max_message_mb < 1:
        raise ValueError(f"--max-message-mb must be at least 1, got {max_message_mb}")
    if keep_checkpoints < 0:
        raise ValueError(f"--keep-checkpoints must be 0 (keep all) or more, got {keep_checkpoints}")
    orch = Orchestrator(state_dir, heartbeat_interval=heartbeat_interval, step_timeout=step_timeout,
                        max_message_bytes=max_message_mb * 2**20, storage=storage, s3_endpoint_url=s3_endpoint_url,
                        keep_checkpoints=keep_checkpoints)
    try:
        orch.start(f"{host}:{port}")
        print(f"orchestrator serving on {host}:{orch.port} (state in {state_dir})", flush=True)
        _wait(stop)
    finally:
        orch.stop()


def pnode(
    ctx: typer.Context,
    orchestrator: Annotated[str, typer.Option(envvar="DCNR_ORCHESTRATOR",
                                              help="Orchestrator address HOST:PORT.")] = "127.0.0.1:50052",
    port: Annotated[int, typer.Option(help="Port for this PNode's gRPC server (0: any free port).")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    advertise: Annotated[str | None, typer.Option(help="Host other PNodes should dial (default: --host).")] = None,
    pnode_id: Annotated[str | None, typer.Option("--id", help="PNode id (default: hostname + random suffix).")]
    = None,
    memory_budget: Annotated[str | None, typer.Option(help="Memory for hosted VNodes, e.g. 4GiB "
                                                           "(default: half the machine's memory).")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads for compute (default: torch's default).")]
    = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    heartbeat_interval: Annotated[float | None, typer.Option(help=HEARTBEAT_HELP + " Default: the orchestrator's.")]
    = None,
    task_timeout: Annotated[float, typer.Option(help="Seconds a request may wait for inputs or gradients.")] = 300.0,
    max_message_mb: Annotated[int, typer.Option(help="Largest gRPC message accepted or sent, in MiB.")] = 256,
    log_format: Annotated[str, typer.Option(help="text, or json (one object per line).")] = "text",
) -> None:
    """Run a PNode that lends this machine to the fleet (stops cleanly on SIGTERM/Ctrl-C).

    `dcnr pnode list` shows the fleet instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dcnr.pnode.agent import PNode
    from dcnr.runtime.allocator import keep_freed_memory

    logs.configure(log_format)
    keep_freed_memory()  # a training process: reuse freed memory instead of re-faulting it every step
    budget = logs.parse_size(memory_budget) if memory_budget is not None else None
    if max_message_mb < 1:
        raise ValueError(f"--max-message-mb must be at least 1, got {max_message_mb}")
    if heartbeat_interval is not None and heartbeat_interval <= 0:
        raise ValueError(f"--heartbeat-interval must be positive, got {heartbeat_interval}")
    stop = _stop_on_signals()
    node = PNode(orchestrator, pnode_id=pnode_id, bind=host, port=port, advertise=advertise, memory_budget=budget,
                 threads=threads, device=device, heartbeat_interval=heartbeat_interval, task_timeout=task_timeout,
                 max_message_bytes=max_message_mb * 2**20)
    try:
        node.start()
        print(f"pnode {node.id} serving at {node.address}", flush=True)
        _wait(stop)
    finally:
        node.stop()
