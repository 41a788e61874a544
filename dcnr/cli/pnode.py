"""`dcnr pnode list`: the fleet as the orchestrator sees it (`dcnr pnode` itself runs a PNode: see
`dcnr.cli.serve`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, table


def pnode_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """PNodes: state, hardware and hosted VNodes."""
    with connect(orchestrator) as c:
        found = c.list_pnodes()
    rows: list[dict[str, Any]] = []
    for p in found:
        hw = p.hardware
        rows.append({"id": p.id, "name": p.name, "address": p.address, "state": p.state, "load": p.load,
                     "last_seen": datetime.fromtimestamp(p.last_seen, UTC).isoformat(timespec="seconds"),
                     "version": p.version,
                     "hardware": {"cpu_cores": hw.cpu_cores, "memory_bytes": hw.memory_bytes, "device": hw.device,
                                  "memory_budget_bytes": hw.memory_budget_bytes, "threads": hw.threads},
                     "vnodes": list(p.vnodes)})
    if as_json:
        print(json.dumps(rows))
        return

    def hosted(v: list[str]) -> str:
        return f"{len(v)}: " + ", ".join(v[:3]) + (" …" if len(v) > 3 else "") if v else "0"

    table("pnodes", ["id", "name", "address", "state", "hardware", "VNodes"], [
        [r["id"], r["name"], r["address"], r["state"],
         f"{r['hardware']['device']}, {r['hardware']['cpu_cores']} cores, "
         f"{r['hardware']['memory_budget_bytes'] / 2**30:.1f}/{r['hardware']['memory_bytes'] / 2**30:.1f} GiB, "
         f"{r['hardware']['threads']} threads", hosted(r["vnodes"])] for r in rows])
