"""`dcnr pnode list`, `trust`, `release`: the fleet as the orchestrator sees it, and the standing of its
PNodes (`dcnr pnode` itself runs a PNode: see `dcnr.cli.serve`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, duration, table
from dcnr.client import PNodeInfo

PNodeId = Annotated[str, typer.Argument(help="PNode id (pn-…, as `dcnr pnode list` shows it).")]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _local(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def pnode_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """PNodes: state (alive, paused, dead, quarantined), trust, hardware, hosted VNodes and the compute time
    each contributed."""
    with connect(orchestrator) as c:
        found = c.list_pnodes()
    rows: list[dict[str, Any]] = []
    for p in found:
        hw = p.hardware
        rows.append({"id": p.id, "name": p.name, "address": p.address, "state": p.state, "load": p.load,
                     "last_seen": _iso(p.last_seen), "version": p.version,
                     "hardware": {"cpu_cores": hw.cpu_cores, "memory_bytes": hw.memory_bytes, "device": hw.device,
                                  "memory_budget_bytes": hw.memory_budget_bytes, "threads": hw.threads},
                     "vnodes": list(p.vnodes), "trusted": p.trusted, "charges": p.charges,
                     "quarantined_until": _iso(p.quarantined_until) if p.quarantined_until else None,
                     "quarantine_reason": p.quarantine_reason, "paused": p.paused,
                     "compute_seconds": p.compute_seconds})
    if as_json:
        print(json.dumps(rows))
        return

    def hosted(v: list[str]) -> str:
        return f"{len(v)}: " + ", ".join(v[:3]) + (" …" if len(v) > 3 else "") if v else "0"

    table("pnodes", ["id", "name", "address", "state", "trusted", "charges", "hardware", "VNodes", "compute"], [
        [r["id"], r["name"], r["address"], _state(p), "yes" if r["trusted"] else "no", r["charges"],
         f"{r['hardware']['device']}, {r['hardware']['cpu_cores']} cores, "
         f"{r['hardware']['memory_budget_bytes'] / 2**30:.1f}/{r['hardware']['memory_bytes'] / 2**30:.1f} GiB, "
         f"{r['hardware']['threads']} threads", hosted(r["vnodes"]), duration(p.compute_seconds)]
        for p, r in zip(found, rows, strict=True)])


def _state(p: PNodeInfo) -> str:
    """alive, paused or dead, or quarantined until when (and why)."""
    if not p.quarantined_until:
        return "paused" if p.paused and p.state == "alive" else p.state
    quarantined = f"quarantined until {_local(p.quarantined_until)}" + (
        f" ({p.quarantine_reason})" if p.quarantine_reason else "")
    return quarantined if p.state == "alive" else f"{p.state}, {quarantined}"


def pnode_trust(pnode_id: PNodeId,
                revoke: Annotated[bool, typer.Option("--revoke", help="Remove the trust mark instead.")] = False,
                orchestrator: Orchestrator = DEFAULT) -> None:
    """Mark a PNode as trusted: its work is re-executed a tenth as often (operators only)."""
    with connect(orchestrator) as c:
        info = c.trust_pnode(pnode_id, trusted=not revoke)
    print(f"PNode {info.id} {'trusted' if info.trusted else 'no longer trusted'}")


def pnode_release(pnode_id: PNodeId, orchestrator: Orchestrator = DEFAULT) -> None:
    """End a PNode's quarantine and clear its charges, so it gets work again (operators only)."""
    with connect(orchestrator) as c:
        info = c.release_pnode(pnode_id)
    print(f"PNode {info.id} released from quarantine")
