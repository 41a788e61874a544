"""`dcnr orchestrator` and `dcnr pnode`: the two long-running processes."""

from __future__ import annotations

import datetime
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer

from dcnr.cli import logs
from dcnr.orchestrator.limits import Limits, MiB

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
    port: Annotated[int, typer.Option(help="Public port: clients (with a token, or anonymous) and PNodes "
                                           "enrolling.")] = 50052,
    peer_port: Annotated[int, typer.Option(help="Port PNodes reach with their certificates (mutual TLS); "
                                                "0: any free port.")] = 50053,
    relay_port: Annotated[int, typer.Option(help="Port of the orchestrator's own relay, which PNodes behind NAT "
                                                 "attach to while no `dcnr relay` serves them; 0: any free "
                                                 "port.")] = 50054,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    advertise: Annotated[str | None, typer.Option(help="Host volunteers dial, for the printed join command "
                                                       "(default: --host, or this machine's name).")] = None,
    state_dir: Annotated[Path, typer.Option(help="Where the SQLite state lives (PNodes, networks, sessions).")]
    = Path("dcnr-state"),
    heartbeat_interval: Annotated[float, typer.Option(help=HEARTBEAT_HELP)] = 30.0,
    step_timeout: Annotated[float, typer.Option(help="Seconds a training step or request may take.")] = 600.0,
    max_message_mb: Annotated[int, typer.Option(help="Largest gRPC message accepted or sent, in MiB.")] = 256,
    storage: Annotated[str | None, typer.Option(help="Checkpoints, vocabularies and datasets: file:///path or "
                                                     "s3://bucket/prefix (default: STATE_DIR/storage).")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="Endpoint of an S3-compatible store.")] = None,
    private: Annotated[bool, typer.Option(help="No anonymous reads: listings of networks, sessions, datasets "
                                                "and vocabularies need a token too (and so does the dashboard's "
                                                "JSON API).")] = False,
    http_port: Annotated[int, typer.Option(help="Plain-HTTP port on --host for the dashboard, its JSON API and "
                                                "Prometheus metrics (/metrics); 0: off.")] = 50080,
    dashboard: Annotated[bool, typer.Option("--dashboard/--no-dashboard", help="Serve the dashboard and its JSON "
                                            "API on --http-port; --no-dashboard leaves only /metrics.")] = True,
    rate_limit: Annotated[float, typer.Option(help="Calls per second allowed per identity (token, PNode, or "
                                                   "address of an anonymous caller).")] = 500.0,
    certificate_hours: Annotated[float, typer.Option(help="Lifetime of PNode certificates; renewed while they "
                                                          "heartbeat.")] = 24.0,
    max_artifact_mb: Annotated[int, typer.Option(help="Largest network artifact `dcnr network import` may send, "
                                                     "in MiB.")] = Limits.max_artifact_bytes // MiB,
    max_dataset_mb: Annotated[int, typer.Option(help="Most text one dataset may hold, in MiB.")]
    = Limits.max_dataset_bytes // MiB,
    keep_checkpoints: Annotated[int, typer.Option(help=KEEP_HELP)] = 5,
    quarantine_after: Annotated[int, typer.Option(help="Failed validations (charges) after which a PNode is "
                                                       "quarantined: it gets no work until the cooling-off ends or "
                                                       "an operator releases it (dcnr pnode release).")] = 1,
    cooling_off_hours: Annotated[float, typer.Option(help="How long a quarantine lasts, in hours.")] = 24.0,
    log_format: Annotated[str, typer.Option(help="text, or json (one object per line).")] = "text",
) -> None:
    """Run the orchestrator: PNode registry, placement, networks, sessions, data (stops on SIGTERM/Ctrl-C).

    On first start it creates its CA under STATE_DIR/tls and STATE_DIR/admin.yaml (the address, the CA
    and an operator token: `dcnr --config STATE_DIR/admin.yaml ...`), and prints the command volunteers
    run to join.
    """
    from dcnr.orchestrator.app import Orchestrator

    logs.configure(log_format)
    if heartbeat_interval <= 0:
        raise ValueError(f"--heartbeat-interval must be positive, got {heartbeat_interval}")
    stop = _stop_on_signals()
    if max_message_mb < 1:
        raise ValueError(f"--max-message-mb must be at least 1, got {max_message_mb}")
    if rate_limit <= 0 or certificate_hours <= 0:
        raise ValueError("--rate-limit and --certificate-hours must be positive")
    for option, mb in (("--max-artifact-mb", max_artifact_mb), ("--max-dataset-mb", max_dataset_mb)):
        if mb < 1:
            raise ValueError(f"{option} must be at least 1, got {mb}")
    limits = Limits(max_artifact_bytes=max_artifact_mb * MiB, max_dataset_bytes=max_dataset_mb * MiB)
    if keep_checkpoints < 0:
        raise ValueError(f"--keep-checkpoints must be 0 (keep all) or more, got {keep_checkpoints}")
    if quarantine_after < 1:
        raise ValueError(f"--quarantine-after must be at least 1, got {quarantine_after}")
    if cooling_off_hours <= 0:
        raise ValueError(f"--cooling-off-hours must be positive, got {cooling_off_hours:g}")
    if not 0 <= http_port < 65536:
        raise ValueError(f"--http-port must be a port number (0: off), got {http_port}")
    orch = Orchestrator(state_dir, heartbeat_interval=heartbeat_interval, step_timeout=step_timeout,
                        max_message_bytes=max_message_mb * 2**20, storage=storage, s3_endpoint_url=s3_endpoint_url,
                        public_reads=not private, rate_limit=rate_limit,
                        certificate_lifetime=datetime.timedelta(hours=certificate_hours), limits=limits,
                        keep_checkpoints=keep_checkpoints, quarantine_after=quarantine_after,
                        cooling_off=cooling_off_hours * 3600)
    try:
        orch.start(f"{host}:{port}", f"{host}:{peer_port}", relay_address=f"{host}:{relay_port}",
                   http_address=f"{host}:{http_port}" if http_port else None, dashboard=dashboard)
        public_host = advertise or (socket.gethostname() if host in ("0.0.0.0", "::") else host)
        web = (f"{'dashboard and metrics' if dashboard else 'metrics'} on http://{public_host}:{orch.http_port}/\n"
               if orch.http is not None else "")
        print(f"orchestrator serving on {host}:{orch.port}, PNodes on port {orch.peer_port}, relaying on port "
              f"{orch.relay_port} (state in {state_dir})\n{web}"
              f"client configuration (operator): {orch.admin_config}\n"
              f"volunteers join with: {orch.join_command(public_host)}", flush=True)
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
    ca_fingerprint: Annotated[str | None, typer.Option(help="SHA256:<hex> of the orchestrator's CA, as its join "
                                                            "command prints it (needed on first start).")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where this PNode keeps its key and the CA it trusts "
                                                        "(default: the user's data directory).")] = None,
    name: Annotated[str | None, typer.Option(help="A label for people in listings (default: host name); "
                                                 "the id derives from this PNode's key.")] = None,
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
    outbound_only: Annotated[bool, typer.Option(help="Listen on no port (behind NAT or a firewall): take part "
                                                     "through a relay the orchestrator names. Without it a PNode "
                                                     "that the orchestrator cannot reach does so too.")] = False,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics over plain HTTP at "
                                                   "http://HOST:PORT/metrics (on --host); 0: off.")] = 0,
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
    if not 0 <= metrics_port < 65536:
        raise ValueError(f"--metrics-port must be a port number (0: off), got {metrics_port}")
    stop = _stop_on_signals()
    node = PNode(orchestrator, state_dir=state_dir, ca_fingerprint=ca_fingerprint, name=name, bind=host, port=port,
                 advertise=advertise, memory_budget=budget,
                 threads=threads, device=device, heartbeat_interval=heartbeat_interval, task_timeout=task_timeout,
                 max_message_bytes=max_message_mb * 2**20, outbound_only=outbound_only,
                 metrics_port=metrics_port or None)
    try:
        node.start()
        how = f"relayed by {node.relay}" if node.relay else "serving"
        metrics = f", metrics on http://{host}:{node.metrics_port}/metrics" if node.metrics_port else ""
        print(f"pnode {node.id} ({node.name}) {how} at {node.address}{metrics}", flush=True)
        _wait(stop)
    finally:
        node.stop()
