"""`dcnr relay` (run a relay for PNodes behind NAT) and `dcnr relay list`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import platformdirs
import typer

from dcnr.cli import logs
from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, settings, table
from dcnr.cli.serve import _stop_on_signals, _wait
from dcnr.errors import InvalidArgument
from dcnr.security import config as client_config
from dcnr.security import pki


def relay_run(
    ctx: typer.Context,
    orchestrator: Orchestrator = DEFAULT,
    token: Annotated[str | None, typer.Option(envvar="DCNR_TOKEN", help="An operator's token (default: the client "
                                                                         "configuration's).")] = None,
    ca_fingerprint: Annotated[str | None, typer.Option(help="SHA256:<hex> of the orchestrator's CA, when the client "
                                                            "configuration holds no CA certificate.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port PNodes attach to and peers send their hops to "
                                           "(0: any free port).")] = 50055,
    advertise: Annotated[str | None, typer.Option(help="Host PNodes and peers dial (default: --host).")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where the relay keeps its key (default: the user's data "
                                                        "directory).")] = None,
    max_pnodes: Annotated[int, typer.Option(help="Most PNodes attached at once.")] = 64,
    heartbeat_interval: Annotated[float | None, typer.Option(help="Seconds between heartbeats (default: the "
                                                                  "orchestrator's).")] = None,
    log_format: Annotated[str, typer.Option(help="text, or json (one object per line).")] = "text",
) -> None:
    """Run a relay: PNodes that accept no connections attach to it, and it carries their calls and hops, so
    activations need not pass through the orchestrator (stops on SIGTERM/Ctrl-C).

    Relays carry other PNodes' traffic, so a relay's certificate needs an operator's token: run it with the
    operator's client configuration (`dcnr --config STATE_DIR/admin.yaml relay ...`) or --token and
    --ca-fingerprint. `dcnr relay list` shows the relays instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dcnr.relay.agent import RelayNode

    logs.configure(log_format)
    path = client_config.find(settings["config"])
    found = client_config.ClientConfig.load(path) if path is not None else None
    address = orchestrator or (found.orchestrator if found else "") or "127.0.0.1:50052"
    if ca_fingerprint:
        ca = pki.fetch_ca_certificate(address, ca_fingerprint)
    elif found is not None and found.ca_certificate:
        ca = found.ca_certificate.encode()
    else:
        raise InvalidArgument("no CA to trust the orchestrator with: pass --ca-fingerprint SHA256:<hex> or a "
                              "--config holding its CA certificate")
    stop = _stop_on_signals()
    node = RelayNode(address, ca, token or (found.token if found else ""),
                     state_dir or Path(platformdirs.user_data_dir("dcnr")) / "relay", bind=host, port=port,
                     advertise=advertise, max_pnodes=max_pnodes, heartbeat_interval=heartbeat_interval)
    try:
        node.start()
        print(f"relay {node.id} serving at {node.address} for {address}", flush=True)
        _wait(stop)
    finally:
        node.stop()


def relay_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Relays (the orchestrator's own first): state, PNodes attached, bytes carried."""
    with connect(orchestrator) as c:
        found = c.list_relays()
    rows = [{"id": r.id, "address": r.address, "state": r.state, "attached": r.attached,
             "bytes_forwarded": r.bytes_forwarded, "hop_bytes": r.hop_bytes, "last_seen": r.last_seen,
             "pnodes": list(r.pnodes)} for r in found]
    if as_json:
        print(json.dumps(rows))
        return
    table("relays", ["id", "address", "state", "attached", "carried (hops)", "PNodes sent to it"], [
        [r.id, r.address, r.state, r.attached,
         f"{logs.format_size(r.bytes_forwarded)} ({logs.format_size(r.hop_bytes)})", len(r.pnodes)] for r in found])
