"""The network artifact: a network with its state in one self-describing safetensors file.

Parameters are keyed `<node_id>.<param>`, optimizer state `optim/<node_id>.<param>/<key>`;
the metadata holds the network YAML (and whatever facts the writer adds). `dcnr network
export`, `dcnr checkpoint export` write it; `dcnr network import` and
`LocalExecutor.from_artifact` read it. In memory the state is per VNode, keyed the way
`VNode.load_state` takes it: `param/<name>` and `optim/<name>/<key>`.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcnr.spec.model import NetworkSpec

ARTIFACT_FORMAT = "dcnr-artifact/1"
VNodeState = dict[str, torch.Tensor]  # "param/<name>", "optim/<name>/<key>"


def write_artifact(state: dict[str, VNodeState], metadata: dict[str, str]) -> bytes:
    flat: dict[str, torch.Tensor] = {}
    for vnode, tensors in state.items():
        for name, t in tensors.items():
            kind, _, rest = name.partition("/")
            flat[f"{vnode}.{rest}" if kind == "param" else f"optim/{vnode}.{rest}"] = t.contiguous()
    return bytes(save_safetensors(flat, metadata={"format": ARTIFACT_FORMAT, **metadata}))


def read_artifact(blob: bytes, spec: NetworkSpec) -> dict[str, VNodeState]:
    """Per-VNode state from an artifact of this network (node ids and parameter names may contain dots)."""
    try:
        flat = load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise ValueError(f"damaged network artifact: {exc}") from None
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
