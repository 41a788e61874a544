"""Checkpoints: every VNode's state in object storage.

Owns the checkpoint format: one safetensors blob per VNode (its parameters, optimizer
state and step; content-addressed, so an unchanged VNode costs nothing), and a JSON
manifest per (network, step) that names them, written last. It also moves state
between PNodes and storage (`gather`, `restore`, `save_to_storage`,
`restore_from_storage`). It must not decide when to checkpoint: sessions do. The
one-file artifact users export is `dcnr.runtime.artifact`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
from safetensors.torch import load as load_safetensors

from dcnr.orchestrator.fleet import Fleet
from dcnr.proto import codec
from dcnr.proto.v1 import common_pb2, node_pb2
from dcnr.runtime.artifact import VNodeState
from dcnr.spec.model import NetworkSpec
from dcnr.storage import BlobStore

MANIFEST_FORMAT = "dcnr-manifest/1"


def gather(fleet: Fleet, spec: NetworkSpec, timeout: float) -> dict[str, VNodeState]:
    """Every VNode's state, read from the PNodes that host it."""
    out: dict[str, VNodeState] = {}
    for vnode, pid in sorted(fleet.placement(spec).items()):
        reply = fleet.vnode_stub(pid).Save(node_pb2.SaveRequest(network=spec.name, vnode=vnode), timeout=timeout)
        out[vnode] = {t.name: codec.decode_tensor(t.tensor) for t in reply.tensors}
    return out


def reset(fleet: Fleet, spec: NetworkSpec, step: int, timeout: float) -> dict[str, str]:
    """Place the network on live PNodes and put each of them at `step` with no unfinished work."""
    placement = fleet.placement(spec)
    hosts = set(placement.values())
    for pid in sorted(hosts | {p.id for p in fleet.alive()}):  # every live PNode forgets stale locations
        try:
            fleet.vnode_stub(pid).Update(node_pb2.UpdateRequest(network=spec.name, abandon=True, step=step),
                                         timeout=timeout)
        except grpc.RpcError:
            if pid in hosts:
                raise  # a PNode that must host part of the network is unreachable: not restored
    return placement


def restore(fleet: Fleet, spec: NetworkSpec, state: dict[str, VNodeState], step: int, timeout: float) -> None:
    """Put the whole network at `step` with `state`: unfinished work everywhere is dropped, every PNode
    hosting it is reset to the step, and each VNode with state is loaded wherever it is placed now."""
    placement = reset(fleet, spec, step, timeout)
    for vnode, pid in sorted(placement.items()):
        tensors = state.get(vnode)
        if tensors:
            fleet.vnode_stub(pid).Load(node_pb2.LoadRequest(
                network=spec.name, vnode=vnode, step=step,
                tensors=[common_pb2.NamedTensor(name=k, tensor=codec.encode_tensor(t)) for k, t in tensors.items()]),
                timeout=timeout)


def save_to_storage(fleet: Fleet, spec: NetworkSpec, timeout: float) -> dict[str, tuple[str, int]]:
    """Each PNode writes its VNodes' state as blobs straight to storage; returns {vnode: (sha256, bytes)}."""
    futures = {vnode: fleet.vnode_stub(pid).Save.future(
        node_pb2.SaveRequest(network=spec.name, vnode=vnode, to_storage=True), timeout=timeout)
        for vnode, pid in sorted(fleet.placement(spec).items())}
    return {vnode: (f.result().digest, int(f.result().size)) for vnode, f in futures.items()}


def restore_from_storage(fleet: Fleet, spec: NetworkSpec, vnodes: dict[str, str], step: int, timeout: float) -> None:
    """Like `restore`, but each PNode fetches its VNodes' blobs itself (and checks their hashes)."""
    placement = reset(fleet, spec, step, timeout)
    futures = [fleet.vnode_stub(pid).Load.future(
        node_pb2.LoadRequest(network=spec.name, vnode=vnode, step=step, digest=vnodes[vnode]), timeout=timeout)
        for vnode, pid in sorted(placement.items()) if vnode in vnodes]
    for f in futures:
        f.result()


class Checkpoints:
    """Manifests under `<network>/<step>.json`, each naming one blob per VNode."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def write_manifest(self, spec: NetworkSpec, yaml_text: str, step: int, vnodes: dict[str, tuple[str, int]],
                       info: dict[str, Any]) -> dict[str, Any]:
        """The manifest of blobs PNodes wrote; each must be in storage first (a PNode cannot claim one)."""
        missing = [v for v, (digest, _) in vnodes.items() if not self.blobs.objects.exists(f"blobs/{digest}")]
        if missing:
            raise ValueError(f"checkpoint of {spec.name!r}: blobs of {', '.join(missing[:4])} are not in storage")
        manifest = {"format": MANIFEST_FORMAT, "network": spec.name, "step": step, "yaml": yaml_text,
                    "vnodes": {v: d for v, (d, _) in sorted(vnodes.items())},
                    "bytes": sum(size for _, size in vnodes.values()), "created_at": time.time(), **info}
        self.blobs.put_manifest(f"{spec.name}/{step:012d}.json", json.dumps(manifest, sort_keys=True).encode())
        return manifest

    def list(self, network: str) -> list[dict[str, Any]]:
        """Manifests of a network, oldest first (a manifest that cannot be read is skipped, never used)."""
        out = []
        for key in self.blobs.list_manifests(f"{network}/"):
            try:
                manifest = json.loads(self.blobs.get_manifest(key))
            except (ValueError, FileNotFoundError):
                continue
            if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT:
                out.append(manifest)
        return sorted(out, key=lambda m: int(m["step"]))

    def latest(self, network: str, session: str | None = None, at_most: int | None = None) -> dict[str, Any] | None:
        found = [m for m in self.list(network) if (session is None or m.get("session") == session)
                 and (at_most is None or int(m["step"]) <= at_most)]
        return found[-1] if found else None

    def read(self, manifest: dict[str, Any]) -> dict[str, VNodeState]:
        """Every VNode's state named by a manifest; a blob that fails its hash check is refused."""
        return {vnode: load_safetensors(self.blobs.get_blob(digest)) for vnode, digest in manifest["vnodes"].items()}
