"""Stored networks: definitions, where their VNodes live, and their state as one-file artifacts.

Owns the rules around a network's life on the orchestrator: a definition is bounded in size
and validated (including the vocabularies its tokenizers name) before it is stored; a network
being trained by a session cannot be redefined or deleted; an import or a clone either
creates the network with all of its state or leaves nothing behind. Exports and session
checkpoints leave as `dcnr.artifact` files. Knows nothing of gRPC.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from dcnr.artifact import artifact_metadata, executed_state, read_artifact, write_artifact, written_state
from dcnr.errors import AlreadyExists, Conflict, InvalidArgument, NetworkError, NotFound
from dcnr.orchestrator import checkpoints
from dcnr.orchestrator.checkpoints import Checkpoints
from dcnr.orchestrator.datastore import DataStore, check_name
from dcnr.orchestrator.driver import Driver
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.store import NetworkRecord, StateStore
from dcnr.spec.loader import parse_network, parse_stored_network
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import plan
from dcnr.transport.control import NetworkInfo, Placement

log = logging.getLogger("dcnr.orchestrator")

# what a checkpoint artifact records about the training that produced it, as `training.<key>`
TRAINING_FACTS = ("session", "session_step", "steps", "seed", "dataset", "dataset_sha256", "batch_size",
                  "micro_batches")


class Networks:
    def __init__(self, store: StateStore, driver: Driver, fleet: Fleet, data: DataStore,
                 checkpoints: Checkpoints, limits: Limits) -> None:
        self.store = store
        self.driver = driver
        self.fleet = fleet
        self.data = data
        self.checkpoints = checkpoints
        self.limits = limits

    def info(self, name: str) -> NetworkInfo:
        rec = self.store.get_network(name)
        spec = self.driver.network(name).spec
        created = datetime.fromtimestamp(rec.created_at, UTC).isoformat(timespec="seconds")
        return NetworkInfo(rec.name, rec.yaml, len(spec.nodes), spec.num_parameters(), self.driver.step_of(name),
                           created)

    def list_all(self) -> list[NetworkInfo]:
        return [self.info(rec.name) for rec in self.store.list_networks()]

    def create(self, yaml_text: str, source: str = "network", name: str = "") -> NetworkInfo:
        """Store a new network under `name` (default: the name in its YAML)."""
        spec = self._parse(yaml_text, source)
        name = check_name("network", name or spec.name)
        self.store.create_network(NetworkRecord(name, yaml_text))
        log.info("network %s created: %d VNodes", name, len(spec.nodes), extra={"network": name})
        return self.info(name)

    def update(self, name: str, yaml_text: str, source: str = "network") -> NetworkInfo:
        """Replace a network's definition; its VNodes start again from their initial parameters."""
        self._parse(yaml_text, source)
        self.store.get_network(name)
        self.refuse_if_training(name)
        self.store.update_network(name, yaml_text)
        self.store.set_network_step(name, 0)
        self.store.set_placements(name, {})
        self.checkpoints.mark_loaded(name, False)  # back to the seed's parameters
        self.driver.forget(name)
        return self.info(name)

    def delete(self, name: str) -> bool:
        """Delete a network and its checkpoints (exported ones too), then the blobs no other checkpoint names.
        Storage goes first: when it fails, the network is still there to delete again."""
        self.store.get_network(name)
        self.refuse_if_training(name)
        self.driver.forget(name)
        self.checkpoints.delete_network(name)
        return self.store.delete_network(name)

    def placements(self, name: str) -> list[Placement]:
        """Where each VNode of a network lives now, by VNode id."""
        self.store.get_network(name)
        addresses = {p.id: p.address for p in self.store.list_pnodes()}
        return [Placement(vnode, pnode, addresses.get(pnode, ""))
                for vnode, pnode in sorted(self.store.placements(name).items())]

    def refuse_if_training(self, name: str) -> None:
        busy = [s.id for s in self.store.list_sessions() if s.network == name and s.state == "running"]
        if busy:
            raise Conflict(f"network {name!r} is being trained by session {busy[0]}; suspend it first")

    def _parse(self, yaml_text: str, source: str) -> NetworkSpec:
        """A validated definition whose tokenizers and detokenizers name stored vocabularies."""
        self.limits.check("max_network_yaml_bytes", len(yaml_text.encode()), f"{source}: the network definition")
        spec = parse_network(yaml_text, source=source)
        stored = {v["name"] for v in self.data.list_vocabularies()}
        problems = [f"{source}: node {nid!r}: config.vocabulary: unknown vocabulary {vocab!r}; stored: "
                    f"{', '.join(sorted(stored)) or 'none'}"
                    for nid, node in spec.nodes.items()
                    if (vocab := getattr(node.impl.cfg, "vocabulary", None)) is not None and vocab not in stored]
        if problems:
            raise NetworkError(problems)
        return spec

    # -- artifacts --------------------------------------------------------------------------------
    def export(self, name: str, live: bool = False) -> bytes:
        """Every VNode's parameters and optimizer state, and the definition, as one safetensors file.

        A network with verified checkpoints (trained under validation) is exported as the newest one, which
        may be older than its PNodes' state, unless `live`; the metadata gives the step and `verified`."""
        rec = self.store.get_network(name)
        net = self.driver.network(name)
        verified = self.checkpoints.verified(name)
        with net.lock:  # between steps
            step = self.driver.step_of(name)
            if live or not verified or step in verified:
                state = written_state(net.plan, checkpoints.gather(self.driver, net))  # written-graph names
                return write_artifact(state, {"network": name, "step": str(step), "seed": str(net.spec.seed),
                                              "yaml": rec.yaml, "verified": str(step in verified).lower()})
        m = next(m for m in reversed(self.checkpoints.list(name)) if int(m["step"]) in verified)
        return write_artifact(self.checkpoints.read(m), {"network": name, "step": str(m["step"]), "yaml": m["yaml"],
                                                         "seed": str(net.spec.seed), "verified": "true"})

    def import_artifact(self, blob: bytes, name: str = "") -> NetworkInfo:
        """Create a network from an export (under `name`, default the exported one) and load its state into
        the VNodes, wherever they are placed."""
        meta = artifact_metadata(blob)
        spec = parse_stored_network(meta["yaml"], check_name("network", name or meta.get("network", "")))
        state = executed_state(plan(spec), read_artifact(blob, spec))  # to the VNodes that run it
        step = int(meta.get("step", "0"))
        self.store.create_network(NetworkRecord(spec.name, meta["yaml"], step=step))
        self.checkpoints.mark_loaded(spec.name)  # its parameters are not its seed's, even at step 0
        try:
            net = self.driver.network(spec.name)
            with net.lock:
                checkpoints.restore(self.driver, net, state, step)
        except BaseException:
            self.checkpoints.mark_loaded(spec.name, False)
            self.driver.forget(spec.name)
            self.store.delete_network(spec.name)  # nothing half-imported stays behind
            raise
        log.info("network %s imported at step %d", spec.name, step, extra={"network": spec.name})
        return self.info(spec.name)

    def clone(self, source: str, name: str) -> NetworkInfo:
        """A copy of a network under a new name, with its current parameters and optimizer state."""
        if not name:
            raise InvalidArgument("a clone needs a new name")
        check_name("network", name)  # before exporting the source, which places it and builds its VNodes
        if any(rec.name == name for rec in self.store.list_networks()):
            raise AlreadyExists(f"network {name!r} already exists")
        return self.import_artifact(self.export(source), name)

    def session_checkpoints(self, session_id: str) -> list[dict[str, Any]]:
        """The manifests of the checkpoints a session wrote, oldest first."""
        rec = self.store.get_session(session_id)
        return [m for m in self.checkpoints.list(rec.network) if m.get("session") == rec.id]

    def export_checkpoint(self, session_id: str, session_step: int | None = None) -> bytes:
        """A session's checkpoint (its newest verified one, else its latest, or the one at `session_step`) as a
        self-describing artifact:
        parameters, optimizer state, YAML and the facts of the training that produced it. An exported
        checkpoint is kept: retention never deletes it (deleting the network does)."""
        found = self.session_checkpoints(session_id)
        verified = self.checkpoints.verified(found[0]["network"]) if found else set()
        if session_step is not None:
            found = [m for m in found if m["session_step"] == session_step]
        elif any(int(m["step"]) in verified for m in found):  # the newest verified one by default
            found = [m for m in found if int(m["step"]) in verified]
        if not found:
            raise NotFound(f"session {session_id} has no checkpoint"
                           + (f" at step {session_step}" if session_step is not None else ""))
        m = found[-1]
        self.checkpoints.mark_kept(m["network"], int(m["step"]))  # before reading: retention keeps it from now on
        facts = {f"training.{k}": str(m[k]) for k in TRAINING_FACTS if k in m}
        return write_artifact(self.checkpoints.read(m), {
            "network": m["network"], "step": str(m["step"]), "yaml": m["yaml"],
            "seed": str(parse_stored_network(m["yaml"], m["network"]).seed),
            "verified": str(int(m["step"]) in verified).lower(), **facts})
