"""Checkpoints: every VNode's state in object storage.

Owns the checkpoint format: one safetensors blob per VNode (its parameters, optimizer
state and step; content-addressed, so an unchanged VNode costs nothing), and a JSON
manifest per (network, step) that names them, written last. It also moves state
between PNodes and storage (`gather`, `restore`, `save_to_storage`,
`restore_manifest`). A network's first checkpoint before any training names no blobs:
its parameters are a pure function of the seed, so restoring it builds them again. It
must not decide when to checkpoint: sessions do. The
one-file artifact users export is `dcnr.artifact`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors

from dcnr.artifact import VNodeState, written_state
from dcnr.errors import DcnrError, InvalidArgument
from dcnr.orchestrator.fleet import Deployment
from dcnr.runtime.executor import build_vnodes
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import plan
from dcnr.storage import BlobStore

if TYPE_CHECKING:
    from dcnr.orchestrator.driver import Driver, NetworkState

MANIFEST_FORMAT = "dcnr-manifest/1"
SEED_ORIGIN = "seed"  # a manifest of initial parameters: nothing uploaded, they derive from the seed


def gather(driver: Driver, net: NetworkState) -> dict[str, VNodeState]:
    """Every VNode's state, read from the PNodes that host it."""
    deployment = driver.deploy(net)
    return {vnode: driver.fleet.client(pid).save(net.spec.name, vnode)[0]
            for vnode, pid in sorted(deployment.assignments.items())}


def reset(driver: Driver, net: NetworkState, step: int, reinitialize: bool = False) -> Deployment:
    """Place the network on live PNodes and put each of them at `step` with no unfinished work (with
    `reinitialize`, hosted VNodes are built again from the seed)."""
    deployment = driver.deploy(net)
    hosts = set(deployment.pnodes())
    for pid in sorted(hosts | {p.id for p in driver.fleet.alive()}):
        try:
            driver.fleet.client(pid).reset_to_step(net.spec.name, step, reinitialize=reinitialize)
        except DcnrError:
            if pid in hosts:
                raise  # a PNode that must host part of the network is unreachable: not restored
    return deployment


def restore(driver: Driver, net: NetworkState, state: dict[str, VNodeState], step: int) -> None:
    """Put the whole network at `step` with `state`: unfinished work everywhere is dropped, every PNode
    hosting it is reset to the step, and each VNode with state is loaded wherever it is placed now."""
    deployment = reset(driver, net, step)
    for vnode, pid in sorted(deployment.assignments.items()):
        tensors = state.get(vnode)
        if tensors:
            driver.fleet.client(pid).load(net.spec.name, vnode, step, tensors)


def save_to_storage(driver: Driver, net: NetworkState) -> dict[str, tuple[str, int]]:
    """Each PNode writes its VNodes' state as blobs straight to storage; returns {vnode: (sha256, bytes)}."""
    deployment = driver.deploy(net)
    futures = {vnode: driver.pool.submit(driver.fleet.client(pid).save_to_storage, net.spec.name, vnode)
               for vnode, pid in sorted(deployment.assignments.items())}
    return {vnode: f.result() for vnode, f in futures.items()}


def restore_manifest(driver: Driver, net: NetworkState, manifest: dict[str, Any]) -> None:
    """Put the network at a manifest's step: each PNode fetches its VNodes' blobs itself (and checks their
    hashes), or, for initial parameters, builds them again from the seed."""
    step = int(manifest["step"])
    if manifest.get("origin") == SEED_ORIGIN:
        reset(driver, net, step, reinitialize=True)
        return
    deployment = reset(driver, net, step)
    vnodes = manifest["vnodes"]
    futures = [driver.pool.submit(driver.fleet.client(pid).load_from_storage, net.spec.name, vnode, step,
                                   vnodes[vnode])
               for vnode, pid in sorted(deployment.assignments.items()) if vnode in vnodes]
    for f in futures:
        f.result()


class Checkpoints:
    """Manifests under `<network>/<step>.json`, each naming one blob per VNode."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def write_manifest(self, spec: NetworkSpec, yaml_text: str, step: int, vnodes: dict[str, tuple[str, int]],
                       info: dict[str, Any], origin: str = "blobs") -> dict[str, Any]:
        """The manifest of blobs PNodes wrote; each must be in storage first (a PNode cannot claim one).
        With `origin="seed"` it names no blobs: the state is the seed's initial parameters at step 0."""
        missing = [v for v, (digest, _) in vnodes.items() if not self.blobs.objects.exists(f"blobs/{digest}")]
        if missing:
            raise InvalidArgument(f"checkpoint of {spec.name!r}: blobs of {', '.join(missing[:4])} are not in "
                                  "storage")
        manifest = {"format": MANIFEST_FORMAT, "network": spec.name, "step": step, "yaml": yaml_text,
                    "origin": origin, "vnodes": {v: d for v, (d, _) in sorted(vnodes.items())},
                    "bytes": sum(size for _, size in vnodes.values()), "created_at": time.time(), **info}
        self.blobs.put_manifest(f"{spec.name}/{step:012d}.json", json.dumps(manifest, sort_keys=True).encode())
        return manifest

    def mark_loaded(self, network: str, loaded: bool = True) -> None:
        """Record that a network's parameters were loaded from outside (an import or a clone), so they are
        not the seed's even at step 0; `loaded=False` clears it (a redefined network starts from its seed)."""
        key = f"loaded/{network}"
        if loaded:
            self.blobs.objects.put(key, json.dumps({"network": network, "at": time.time()}).encode())
        elif self.blobs.objects.exists(key):
            self.blobs.objects.delete(key)

    def from_seed(self, network: str, step: int) -> bool:
        """Whether a network at `step` still has the seed's initial parameters: never trained, never
        loaded from outside, never checkpointed with uploaded state."""
        if step != 0 or self.blobs.objects.exists(f"loaded/{network}"):
            return False
        return all(m.get("origin") == SEED_ORIGIN for m in self.list(network))

    def list(self, network: str) -> list[dict[str, Any]]:
        """Manifests of a network, oldest first (a manifest that cannot be read is skipped, never used)."""
        found = (self._read(key) for key in self.blobs.list_manifests(f"{network}/"))
        return sorted((m for m in found if m is not None), key=lambda m: int(m["step"]))

    def names(self, network: str, vnode: str, digest: str) -> bool:
        """Whether a checkpoint of `network` names blob `digest` as `vnode`'s state (newest checked first: a
        restore reads a recent one)."""
        for key in reversed(self.blobs.list_manifests(f"{network}/")):
            manifest = self._read(key)
            if manifest is not None and manifest.get("vnodes", {}).get(vnode) == digest:
                return True
        return False

    def _read(self, key: str) -> dict[str, Any] | None:
        """The manifest under `key`, or None when it cannot be read or is not one."""
        try:
            manifest = json.loads(self.blobs.get_manifest(key))
        except (ValueError, FileNotFoundError):
            return None
        return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None

    def latest(self, network: str, session: str | None = None, at_most: int | None = None) -> dict[str, Any] | None:
        found = [m for m in self.list(network) if (session is None or m.get("session") == session)
                 and (at_most is None or int(m["step"]) <= at_most)]
        return found[-1] if found else None

    def read(self, manifest: dict[str, Any]) -> dict[str, VNodeState]:
        """The state a manifest names, per node of the written graph (as artifacts hold it): from its
        blobs (one that fails its hash check is refused), or built from the seed for initial parameters."""
        executed = plan(parse_stored_network(manifest["yaml"], manifest["network"]))
        if manifest.get("origin") == SEED_ORIGIN:
            vnodes = build_vnodes(executed, int(manifest["network_seed"]), torch.device("cpu"))
            state = {nid: {f"param/{p}": v.params[p].master for p in v.owned} for nid, v in vnodes.items()}
        else:
            state = {vnode: load_safetensors(self.blobs.get_blob(digest))
                     for vnode, digest in manifest["vnodes"].items()}
        return written_state(executed, state)
