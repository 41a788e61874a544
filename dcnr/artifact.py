"""The network artifact: a network with its state in one self-describing safetensors file.

Parameters are keyed `<node_id>.<param>`, optimizer state `optim/<node_id>.<param>/<key>`,
always by the nodes of the *written* graph, whether it was trained fused or not (SPEC §6);
the metadata holds the network YAML (and whatever facts the writer adds). `dcnr network
export`, `dcnr checkpoint export` and `LocalExecutor.save` write it; `dcnr network import`,
`LocalExecutor.load` and `LocalExecutor.from_artifact` read it. In memory the state is per
node, keyed the way `VNode.state` gives it and `VNode.load_state` takes it: `param/<name>`
and `optim/<name>/<key>`; `written_state` and `executed_state` convert between the VNodes
of an `ExecutionPlan` and the written nodes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import ExecutionPlan

ARTIFACT_FORMAT = "dcnr-artifact/1"
VNodeState = dict[str, torch.Tensor]  # "param/<name>", "optim/<name>/<key>"


def write_artifact(state: dict[str, VNodeState], metadata: dict[str, str]) -> bytes:
    flat: dict[str, torch.Tensor] = {}
    for vnode, tensors in state.items():
        for name, t in tensors.items():
            kind, _, rest = name.partition("/")
            flat[f"{vnode}.{rest}" if kind == "param" else f"optim/{vnode}.{rest}"] = t.contiguous()
    return bytes(save_safetensors(flat, metadata={"format": ARTIFACT_FORMAT, **metadata}))


def read_tensors(blob: bytes) -> dict[str, torch.Tensor]:
    """Every tensor of an artifact, flat (`<node>.<param>`, `optim/<node>.<param>/<key>`)."""
    try:
        return load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise ValueError(f"damaged network artifact: {exc}") from None


def read_artifact(blob: bytes, spec: NetworkSpec) -> dict[str, VNodeState]:
    """Per-node state from an artifact of this (written) network."""
    return by_node(read_tensors(blob), spec)


def by_node(flat: Mapping[str, torch.Tensor], spec: NetworkSpec) -> dict[str, VNodeState]:
    """Flat artifact tensors grouped per node of `spec` (node ids and parameter names may contain dots)."""
    by_length = sorted(spec.nodes, key=len, reverse=True)
    out: dict[str, VNodeState] = {}
    for key, t in flat.items():
        kind, rest = ("optim", key[len("optim/"):]) if key.startswith("optim/") else ("param", key)
        vnode = next((v for v in by_length if rest.startswith(v + ".")), None)
        if vnode is None:
            raise ValueError(f"artifact entry {key!r} matches no VNode of network {spec.name!r}")
        out.setdefault(vnode, {})[f"{kind}/{rest[len(vnode) + 1:]}"] = t
    return out


def artifact_metadata(blob: bytes) -> dict[str, str]:
    """The metadata of an artifact; refuses anything that is not one (format, and the network YAML)."""
    try:  # safetensors: an 8-byte little-endian header size, then a JSON header
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + size]) if 0 < size <= len(blob) - 8 else None
    except (ValueError, UnicodeDecodeError):
        header = None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT or "yaml" not in meta:
        raise ValueError("not a DCNR network artifact (written by `dcnr network export` or `dcnr checkpoint export`)")
    return {str(k): str(v) for k, v in meta.items()}


def written_state(plan: ExecutionPlan, states: Mapping[str, VNodeState]) -> dict[str, VNodeState]:
    """Per-VNode state of the executed graph as per-node state of the written graph: a fused
    node's parameters (and optimizer tensors of the same shape) are split into the written
    parameters they are made of; scalar optimizer state (Adam's step) goes to every part."""
    out: dict[str, VNodeState] = {}
    for vnode, state in states.items():
        shapes = plan.spec.nodes[vnode].impl.param_shapes()
        for key, t in state.items():
            kind, _, rest = key.partition("/")
            name = rest if kind == "param" else rest.rpartition("/")[0]
            parts = plan.param_parts(vnode, name)
            if parts is None:
                out.setdefault(vnode, {})[key] = t
                continue
            split = tuple(t.shape) == tuple(shapes[name])
            for part in parts:
                piece = t[part.start:part.stop].clone() if split else t.clone()
                new_key = f"param/{part.param}" if kind == "param" else f"optim/{part.param}/{rest.rpartition('/')[2]}"
                out.setdefault(part.node, {})[new_key] = piece
    return out


def executed_state(plan: ExecutionPlan, states: Mapping[str, VNodeState]) -> dict[str, VNodeState]:
    """The inverse of `written_state`: per-node state of the written graph as per-VNode state
    of the executed graph (every VNode gets an entry; one owning nothing gets `{}`)."""
    out: dict[str, VNodeState] = {}
    for vnode, node in plan.spec.nodes.items():
        mine: VNodeState = dict(states.get(vnode, {}))
        for name in node.impl.param_shapes():
            parts = plan.param_parts(vnode, name)
            if parts is None:
                continue
            pieces = []
            for part in parts:
                piece = states.get(part.node, {}).get(f"param/{part.param}")
                if piece is None:
                    raise ValueError(f"no parameter {part.node}.{part.param} (part of fused VNode {vnode!r})")
                pieces.append(piece)
            mine[f"param/{name}"] = torch.cat(pieces)
            keys = {k.rpartition("/")[2] for p in parts for k in states.get(p.node, {})
                    if k.startswith(f"optim/{p.param}/")}
            for skey in sorted(keys):
                found = [states.get(p.node, {}).get(f"optim/{p.param}/{skey}") for p in parts]
                if any(f is None for f in found):
                    raise ValueError(f"optimizer state {skey!r} exists for some of "
                                     f"{', '.join(f'{p.node}.{p.param}' for p in parts)} but not all")
                tensors = [f for f in found if f is not None]
                if tensors[0].dim() == 0:  # per-parameter scalars (Adam's step): equal in every part
                    if any(not torch.equal(t, tensors[0]) for t in tensors):
                        raise ValueError(f"optimizer state {skey!r} differs between "
                                         f"{', '.join(f'{p.node}.{p.param}' for p in parts)}")
                    mine[f"optim/{name}/{skey}"] = tensors[0]
                else:
                    mine[f"optim/{name}/{skey}"] = torch.cat(tensors)
        out[vnode] = mine
    return out
