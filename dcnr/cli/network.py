"""`dcnr network`: check YAML files here (validate, analyze), or manage the networks an orchestrator
holds (create, update, delete, list, show, export, import, clone)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, out, table
from dcnr.client import NetworkInfo

File = Annotated[Path, typer.Argument(help="Network YAML file.")]
Name = Annotated[str, typer.Argument(help="Network name.")]


# -- files here -----------------------------------------------------------------------------------

def network_validate(file: File) -> None:
    """Validate a network file: every problem is printed, one per line (exit 2 if any); warnings
    (keys set to no effect) go to stderr, one per line, and still exit 0."""
    from dcnr.spec.loader import load_network

    spec = load_network(file)
    for line in spec.warnings:
        print(f"warning: {line}", file=sys.stderr)  # verbatim, like problems: one line each
    out.print(f"{file}: ok — network {spec.name!r}, {len(spec.nodes)} VNodes, "
              f"{spec.num_parameters():,} parameters", highlight=False)


def _shapes(shapes: tuple[Any, ...]) -> list[list[int] | None]:
    return [list(s) if s is not None else None for s in shapes]


def network_analyze(
    file: File,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
) -> None:
    """Per node: type, input/output shapes (no batch axis) and parameter count, with totals."""
    from dcnr.spec.loader import load_network

    spec = load_network(file)
    rows: list[dict[str, Any]] = []
    for nid, node in spec.nodes.items():
        tied = node.impl.tied()
        count = sum(math.prod(shape) for pname, shape in node.impl.param_shapes().items() if pname not in tied)
        rows.append({"id": nid, "type": node.type, "input_shapes": _shapes(node.input_shapes),
                     "output_shapes": _shapes(node.output_shapes), "parameters": count})
    total = sum(r["parameters"] for r in rows)
    if as_json:
        print(json.dumps({"name": spec.name, "vnodes": len(rows), "parameters": total, "nodes": rows}))
        return
    t = Table(title=f"{spec.name}: {len(rows)} VNodes, {total:,} parameters")
    for col, justify in (("id", "left"), ("type", "left"), ("inputs", "left"), ("outputs", "left"),
                         ("parameters", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]

    def fmt(shapes: list[list[int] | None]) -> str:
        texts = ["?" if s is None else "[" + ",".join(map(str, s)) + "]" for s in shapes]
        if len(texts) > 1 and len(set(texts)) == 1:
            return f"{len(texts)} × {texts[0]}"
        return " ".join(texts)

    for r in rows:
        t.add_row(r["id"], r["type"], fmt(r["input_shapes"]), fmt(r["output_shapes"]), f"{r['parameters']:,}")
    t.add_section()
    t.add_row("total", "", "", "", f"{total:,}")
    out.print(t)


# -- networks an orchestrator holds ---------------------------------------------------------------

def network_create(file: File,
                   name: Annotated[str | None, typer.Option(help="Name (default: the YAML's name).")] = None,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Submit a network; prints its name."""
    with connect(orchestrator) as c:
        print(c.create_network(file, name or "").name)


def network_update(name: Name, file: Annotated[Path, typer.Argument(help="New YAML definition.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Replace a network's definition (its VNodes start again from initial parameters)."""
    with connect(orchestrator) as c:
        print(c.update_network(name, file).name)


def network_delete(name: Name, orchestrator: Orchestrator = DEFAULT) -> None:
    """Delete a network and drop its VNodes from the PNodes."""
    with connect(orchestrator) as c:
        c.delete_network(name)
    print(f"deleted {name}")


def _row(n: NetworkInfo) -> dict[str, Any]:
    return {"name": n.name, "vnodes": n.vnodes, "parameters": n.parameters, "step": n.step,
            "created_at": n.created_at}


def network_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Networks the orchestrator holds."""
    with connect(orchestrator) as c:
        rows = [_row(n) for n in c.list_networks()]
    if as_json:
        print(json.dumps(rows))
        return
    table("networks", ["name", "VNodes", "parameters", "step", "created"],
          [[r["name"], r["vnodes"], f"{r['parameters']:,}", r["step"], r["created_at"]] for r in rows])


def network_show(name: Name, as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """A network's size, step and where each VNode runs."""
    with connect(orchestrator) as c:
        found = c.inspect_network(name)
    doc = {**_row(found.network), "placements": [{"vnode": p.vnode, "pnode": p.pnode, "address": p.address}
                                                 for p in found.placements]}
    if as_json:
        print(json.dumps(doc))
        return
    out.print(f"network {doc['name']}: {doc['vnodes']} VNodes, {doc['parameters']:,} parameters, step {doc['step']}")
    table("placement", ["VNode", "PNode", "address"], [[p["vnode"], p["pnode"], p["address"]]
                                                       for p in doc["placements"]])


def network_export(name: Name,
                   output: Annotated[Path, typer.Argument(help="Where to write the .safetensors file.")],
                   live: Annotated[bool, typer.Option(
                       "--live", help="The PNodes' current state, even when validation has not verified it yet.")
                   ] = False,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Download every parameter and optimizer state as one safetensors file. A network trained under
    validation gives its newest verified checkpoint (see `dcnr validation list`) unless --live."""
    from dcnr.artifact import artifact_metadata

    with connect(orchestrator) as c:
        c.export_network(name, output, live=live)
    meta = artifact_metadata(output.read_bytes())
    print(f"{output}: network {meta.get('network')} at step {meta.get('step')}"
          f"{'' if meta.get('verified') == 'true' else ' (not verified by validation)'}")


def network_import(file: Annotated[Path, typer.Argument(help="A .safetensors file written by `network export`.")],
                   name: Annotated[str | None, typer.Option(help="Name (default: the exported name).")] = None,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Create a network from an export: definition, parameters, optimizer state, step. Prints its name."""
    with connect(orchestrator) as c:
        print(c.import_network(file, name or "").name)


def network_clone(source: Annotated[str, typer.Argument(help="Network to copy.")],
                  name: Annotated[str, typer.Argument(help="Name of the copy.")],
                  orchestrator: Orchestrator = DEFAULT) -> None:
    """Copy a network with its current parameters and optimizer state. Prints the new name."""
    with connect(orchestrator) as c:
        print(c.clone_network(source, name).name)
