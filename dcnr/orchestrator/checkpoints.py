"""Checkpoints: every VNode's state in object storage.

Owns the checkpoint format: one safetensors blob per VNode (its parameters, optimizer
state and step; content-addressed, so an unchanged VNode costs nothing), and a JSON
manifest per (network, step) that names them, written last. It also moves state
between PNodes and storage (`gather`, `restore`, `save_to_storage`,
`restore_manifest`). A network's first checkpoint before any training names no blobs:
its parameters are a pure function of the seed, so restoring it builds them again. It
also owns what storage keeps: the newest checkpoints of each session and every exported
one, and only the blobs some checkpoint names (`retain`, `collect_garbage`). It must
not decide when to checkpoint: sessions do. The one-file artifact users export is
`dcnr.artifact`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors

from dcnr.artifact import VNodeState, written_state
from dcnr.errors import DcnrError, InvalidArgument, NotFound
from dcnr.orchestrator.fleet import Deployment
from dcnr.runtime.executor import build_vnodes
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import plan
from dcnr.storage import BlobStore

if TYPE_CHECKING:
    from dcnr.orchestrator.driver import Driver, NetworkState

log = logging.getLogger("dcnr.orchestrator")

MANIFEST_FORMAT = "dcnr-manifest/1"
SEED_ORIGIN = "seed"  # a manifest of initial parameters: nothing uploaded, they derive from the seed
KEEP_CHECKPOINTS = 5  # newest checkpoints kept per session (0: all)
GC_GRACE = 3600.0  # seconds a blob is spared after it was written or a PNode was told to write it
TRANSFERS = 4  # blobs moved between PNodes and storage at once (the orchestrator serves few storage streams)


def gather(driver: Driver, net: NetworkState) -> dict[str, VNodeState]:
    """Every VNode's state, read from the PNodes that host it."""
    deployment = driver.deploy(net)
    return {vnode: driver.fleet.client(pid).save(net.spec.name, vnode)[0]
            for vnode, pid in sorted(deployment.assignments.items())}


@contextlib.contextmanager
def _putting_back(driver: Driver, net: NetworkState) -> Iterator[None]:
    """The network's whole state is put back in the block: VNodes lost before it began are whole again once
    it succeeds (losses during it still count)."""
    losses = driver.fleet.lost(net.spec.name)
    yield
    if losses:
        driver.fleet.restored(net.spec.name, max(losses.values()))


def reset(driver: Driver, net: NetworkState, step: int, reinitialize: bool = False) -> Deployment:
    """Place the network on live PNodes and put each of them at `step` with no unfinished work (with
    `reinitialize`, hosted VNodes are built again from the seed, and the network's state is whole)."""
    with _putting_back(driver, net) if reinitialize else contextlib.nullcontext():
        deployment = driver.deploy(net, restoring=True)
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
    with _putting_back(driver, net):
        deployment = reset(driver, net, step)
        for vnode, pid in sorted(deployment.assignments.items()):
            tensors = state.get(vnode)
            if tensors:
                driver.fleet.client(pid).load(net.spec.name, vnode, step, tensors)


def save_to_storage(driver: Driver, net: NetworkState) -> dict[str, tuple[str, int]]:
    """Each PNode writes its VNodes' state as blobs straight to storage; returns {vnode: (sha256, bytes)}."""
    deployment = driver.deploy(net)
    with ThreadPoolExecutor(max_workers=TRANSFERS, thread_name_prefix="checkpoint") as pool:
        futures = {vnode: pool.submit(driver.fleet.client(pid).save_to_storage, net.spec.name, vnode)
                   for vnode, pid in sorted(deployment.assignments.items())}
        return {vnode: f.result() for vnode, f in futures.items()}


def restore_manifest(driver: Driver, net: NetworkState, manifest: dict[str, Any]) -> None:
    """Put the network at a manifest's step: each PNode fetches its VNodes' blobs itself (and checks their
    hashes), or, for initial parameters, builds them again from the seed."""
    step = int(manifest["step"])
    if manifest.get("origin") == SEED_ORIGIN:
        reset(driver, net, step, reinitialize=True)
        return
    with _putting_back(driver, net):
        deployment = reset(driver, net, step)
        vnodes = manifest["vnodes"]
        with ThreadPoolExecutor(max_workers=TRANSFERS, thread_name_prefix="checkpoint") as pool:
            futures = [pool.submit(driver.fleet.client(pid).load_from_storage, net.spec.name, vnode, step,
                                   vnodes[vnode])
                       for vnode, pid in sorted(deployment.assignments.items()) if vnode in vnodes]
            for f in futures:
                f.result()


class Checkpoints:
    """Manifests under `<network>/<step>.json`, each naming one blob per VNode; marks under
    `kept/<network>/<step>.json` for checkpoints that were exported (never deleted by retention)."""

    def __init__(self, blobs: BlobStore, keep: int = KEEP_CHECKPOINTS, grace: float = GC_GRACE) -> None:
        if keep < 0:
            raise ValueError(f"checkpoints to keep must be 0 (all) or more, got {keep}")
        self.blobs = blobs
        self.keep = keep  # newest checkpoints kept per session; 0 keeps all
        self.grace = grace  # see `collect_garbage`
        self._expected: dict[str, float] = {}  # blob -> when a PNode was last told to write it, or that it is stored
        self._pins = threading.Lock()  # `_expected`, and deleting one blob: `expect` never waits for more
        self._lock = threading.RLock()  # one retention, deletion or collection at a time

    def write_manifest(self, spec: NetworkSpec, yaml_text: str, step: int, vnodes: dict[str, tuple[str, int]],
                       info: dict[str, Any], origin: str = "blobs") -> dict[str, Any]:
        """The manifest of blobs PNodes wrote; each must be in storage first (a PNode cannot claim one).
        With `origin="seed"` it names no blobs: the state is the seed's initial parameters at step 0."""
        missing = [v for v, (digest, _) in vnodes.items() if not self.blobs.has_blob(digest)]
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

    def expect(self, digest: str) -> None:
        """A PNode is about to write this blob, or was told that it is stored already, for a checkpoint whose
        manifest will name it: `collect_garbage` spares it for `grace` seconds. Call it before looking whether
        the blob is stored: once this returns, the blob is not deleted (or was deleted already)."""
        with self._pins:
            self._expected[digest] = time.time()

    def mark_kept(self, network: str, step: int) -> None:
        """Keep the checkpoint of `network` at `step` whatever retention says (it was exported): recorded in
        storage beside it. NotFound when that checkpoint no longer exists."""
        key = f"{network}/{step:012d}.json"
        with self._lock:  # not deleted by `retain` between the check and the mark
            if self._read(key) is None:
                raise NotFound(f"no checkpoint of network {network!r} at step {step} (deleted meanwhile)")
            self.blobs.objects.put(f"kept/{key}", json.dumps({"network": network, "step": step,
                                                             "at": time.time()}).encode())

    def mark_verified(self, network: str, step: int) -> None:
        """Record that every sampled work unit before the checkpoint at `step` passed verification."""
        self.blobs.objects.put(f"verified/{network}/{step:012d}.json", json.dumps(
            {"network": network, "step": step, "at": time.time()}).encode())

    def verified(self, network: str) -> set[int]:
        """Steps of the network's verified checkpoints (those still stored)."""
        steps = {int(key.rsplit("/", 1)[1].split(".")[0]) for key in self.blobs.objects.list(f"verified/{network}/")}
        return steps & {int(m["step"]) for m in self.list(network)}

    def discard(self, network: str, step: int) -> None:
        """Delete a checkpoint that holds work found untrustworthy (even an exported one: its mark goes too)."""
        key = f"{network}/{step:012d}.json"
        with self._lock:
            for mark in (f"kept/{key}", f"verified/{key}"):
                if self.blobs.objects.exists(mark):
                    self.blobs.objects.delete(mark)
            if self._read(key) is not None:
                self.blobs.delete_manifest(key)

    def retain(self, network: str, session: str) -> list[str]:
        """After a new checkpoint of `session`: delete its checkpoints beyond the newest `keep` (not the exported
        ones, not other sessions'), then collect the blobs no checkpoint names. Returns the deleted manifests."""
        deleted: list[str] = []
        with self._lock:
            if self.keep:
                kept = set(self.blobs.objects.list(f"kept/{network}/"))
                mine = [key for key in self.blobs.list_manifests(f"{network}/")
                        if (m := self._read(key)) is not None and m.get("session") == session]
                for key in mine[:-self.keep]:  # keys sort by step: zero-padded
                    if f"kept/{key}" not in kept:
                        self.blobs.delete_manifest(key)
                        deleted.append(key)
            self.collect_garbage()
        return deleted

    def delete_network(self, network: str) -> None:
        """Delete every checkpoint of `network` (exported ones too) and its marks, then the blobs no other
        checkpoint names."""
        with self._lock:
            for key in self.blobs.list_manifests(f"{network}/"):
                self.blobs.delete_manifest(key)
            for key in self.blobs.objects.list(f"kept/{network}/") + self.blobs.objects.list(f"verified/{network}/"):
                self.blobs.objects.delete(key)
            self.mark_loaded(network, False)
            self.collect_garbage()

    def collect_garbage(self) -> list[str]:
        """Delete the blobs no checkpoint names; returns their names.

        A checkpoint is written blobs first, manifest last, so at any moment some blobs are named by no
        manifest yet only because theirs is still being written. A blob is deleted only when all of these hold:

        1. no manifest of any network names it, and every manifest could be read (one that cannot might name
           anything: then nothing is deleted and a warning says which);
        2. no PNode was told to write it, or that it is stored already, in the last `grace` seconds (`expect`,
           called by `BlobAccess` for every upload target): a checkpoint may reuse a blob stored long ago
           without writing it again, so its age alone does not protect it;
        3. it was written more than `grace` seconds ago (a blob written without an upload target of this
           process: one a previous orchestrator process handed out).

        A checkpoint takes from its first upload target to its manifest at most one PNode call per VNode,
        each bounded by the call timeout, so a grace of an hour leaves a wide margin; checkpoints that
        failed half-way leave blobs that are collected once the grace has passed.
        """
        with self._lock:
            named: set[str] = set()
            for key in self.blobs.list_manifests(""):
                try:
                    manifest = json.loads(self.blobs.get_manifest(key))
                except FileNotFoundError:
                    continue  # deleted meanwhile
                except ValueError:
                    manifest = None
                if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
                    log.warning("checkpoint manifest %s in %s cannot be read: no blob is collected until it is "
                                "fixed or removed", key, self.blobs.objects.url)
                    return []
                named.update(manifest.get("vnodes", {}).values())
            now = time.time()
            garbage = []
            for digest, written in sorted(self.blobs.list_blobs().items()):
                if digest in named or written >= now - self.grace:
                    continue
                with self._pins:  # checked again at the moment of deleting: `expect` may have come meanwhile
                    if self._expected.get(digest, 0.0) > now - self.grace:
                        continue
                    self.blobs.delete_blob(digest)
                garbage.append(digest)
            with self._pins:
                self._expected = {d: t for d, t in self._expected.items() if t > now - self.grace}
        if garbage:
            log.info("collected %d unreferenced checkpoint blob(s) from %s", len(garbage), self.blobs.objects.url)
        return garbage

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
