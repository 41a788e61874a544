"""The orchestrator process: `OrchestratorService` and `NodeManagementService` over gRPC.

Owns the mapping of requests to the fleet, driver, sessions and data store, and of
their errors to gRPC statuses: INVALID_ARGUMENT for a bad value (with the same
one-line messages as the CLI), NOT_FOUND for an unknown name or id, ALREADY_EXISTS,
FAILED_PRECONDITION for another major protocol version or a state that forbids the
call, RESOURCE_EXHAUSTED when no PNode has room, ABORTED when a step could not
finish. A bad request never stops the server.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from dcnr import __version__
from dcnr.data.vocab import train_vocabulary
from dcnr.errors import Conflict, NetworkError
from dcnr.orchestrator import checkpoints
from dcnr.orchestrator.checkpoints import Checkpoints
from dcnr.orchestrator.datastore import DataStore, check_name
from dcnr.orchestrator.driver import Driver, Inbox, StepFailed
from dcnr.orchestrator.fleet import Fleet, hardware_dict
from dcnr.orchestrator.placement import PlacementError
from dcnr.orchestrator.sessions import Sessions
from dcnr.orchestrator.storage_service import StorageServicer
from dcnr.orchestrator.store import AlreadyExists, NetworkRecord, NotFound, SessionRecord, SQLiteStore
from dcnr.proto import codec
from dcnr.proto.status import StatusTable, statuses
from dcnr.proto.v1 import common_pb2, node_pb2, node_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, storage_pb2_grpc
from dcnr.proto.version import IncompatibleVersion, check_compatible, version_message
from dcnr.runtime.artifact import artifact_metadata, read_artifact, write_artifact
from dcnr.runtime.sampling import lm_interface
from dcnr.spec.loader import parse_network, parse_stored_network
from dcnr.spec.model import NetworkSpec
from dcnr.storage import BlobStore, open_store

log = logging.getLogger("dcnr.orchestrator")

CHUNK = 1 << 20  # bytes per streamed blob chunk
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20


STATUSES: StatusTable = (
    (IncompatibleVersion, grpc.StatusCode.FAILED_PRECONDITION),
    (NetworkError, grpc.StatusCode.INVALID_ARGUMENT),
    (PlacementError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (StepFailed, grpc.StatusCode.ABORTED),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)


def _statuses(context: grpc.ServicerContext) -> AbstractContextManager[None]:
    return statuses(context, STATUSES)


def _session_info(rec: SessionRecord) -> orchestrator_pb2.TrainSessionInfo:
    return orchestrator_pb2.TrainSessionInfo(
        id=rec.id, network=rec.network, dataset=rec.dataset, state=rec.state, step=rec.step, steps=rec.steps,
        batch_size=rec.batch_size, micro_batches=rec.micro_batches, seed=rec.seed, error=rec.error)


def _dataset_info(d: dict[str, Any]) -> orchestrator_pb2.DatasetInfo:
    return orchestrator_pb2.DatasetInfo(name=d["name"], vocabulary=d["vocabulary"], tokens=d["tokens"],
                                        train_tokens=d["train_tokens"], validation_tokens=d["validation_tokens"],
                                        sha256=d["sha256"])


class Orchestrator:
    """Everything one orchestrator runs, wired together; `start` serves, `stop` shuts down cleanly."""

    def __init__(self, state_dir: str | Path, heartbeat_interval: float = 30.0, step_timeout: float = 600.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, storage: str | None = None,
                 s3_endpoint_url: str | None = None, recovery_timeout: float = 600.0) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = SQLiteStore(self.state_dir / "state.sqlite")
        self.data = DataStore(self.store, self.state_dir / "data")
        self.fleet = Fleet(self.store, heartbeat_interval, max_message_bytes)
        self.inbox = Inbox()
        self.driver = Driver(self.store, self.fleet, self.inbox, step_timeout)
        objects = open_store(storage or (self.state_dir / "storage").resolve().as_uri(), s3_endpoint_url)
        self.checkpoints = Checkpoints(BlobStore(objects))
        self.sessions = Sessions(self.store, self.driver, self.data, self.checkpoints, recovery_timeout)
        self.max_message_bytes = max_message_bytes
        self.server: grpc.Server | None = None
        self.port = 0
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self, address: str = "127.0.0.1:0", threads: int = 32) -> int:
        options = [("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.max_send_message_length", self.max_message_bytes)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="orch-rpc"),
                             options=options)
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(OrchestratorServicer(self), server)
        node_pb2_grpc.add_NodeManagementServiceServicer_to_server(NodeManagementServicer(self), server)
        storage_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(self.checkpoints.blobs), server)
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        server.start()
        self.server = server
        self._monitor = threading.Thread(target=self._watch, name="heartbeats", daemon=True)
        self._monitor.start()
        resumed = self.sessions.resume_interrupted()  # a crash left them running: back from their checkpoints
        if resumed:
            log.info("resuming %d interrupted session(s): %s", len(resumed), ", ".join(resumed))
        log.info("orchestrator serving on port %d (state in %s)", self.port, self.state_dir,
                 extra={"port": self.port})
        return self.port

    def _watch(self) -> None:
        interval = max(0.05, self.fleet.heartbeat_interval / 2)
        while not self._stop.wait(interval):
            try:
                self.fleet.sweep()
            except Exception:  # never let the monitor die
                log.exception("heartbeat sweep failed")

    def stop(self, grace: float = 2.0) -> None:
        self._stop.set()
        for rec in self.store.list_sessions():
            if rec.state == "running":
                self.sessions.suspend(rec.id)
        if self.server is not None:
            self.server.stop(grace).wait()
        self.driver.close()
        self.fleet.close()
        self.store.close()


class NodeManagementServicer(node_pb2_grpc.NodeManagementServiceServicer):
    def __init__(self, orch: Orchestrator) -> None:
        self.o = orch

    def RegisterPNode(self, request: node_pb2.RegisterPNodeRequest,
                      context: grpc.ServicerContext) -> node_pb2.RegisterPNodeResponse:
        with _statuses(context):
            check_compatible(request.version)
            v = request.version
            self.o.fleet.register(request.id, request.address, hardware_dict(request.hardware),
                                  f"{v.major}.{v.minor}.{v.patch}")
            return node_pb2.RegisterPNodeResponse(
                heartbeat_interval_ms=int(self.o.fleet.heartbeat_interval * 1000), version=version_message())
        raise AssertionError("unreachable: abort raises")

    def UnregisterPNode(self, request: node_pb2.PNodeRef,
                        context: grpc.ServicerContext) -> node_pb2.UnregisterPNodeResponse:
        return node_pb2.UnregisterPNodeResponse(removed=self.o.fleet.unregister(request.id))

    def HeartbeatPNode(self, request: node_pb2.HeartbeatRequest,
                       context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        with _statuses(context):
            self.o.fleet.heartbeat(request.id, request.load)
            return node_pb2.HeartbeatResponse(known=True)
        raise AssertionError("unreachable: abort raises")

    def GetVNodeLocation(self, request: node_pb2.VNodeLocationRequest,
                         context: grpc.ServicerContext) -> node_pb2.VNodeLocation:
        with _statuses(context):
            if request.refresh:
                self.o.fleet.sweep()
            spec = self.o.driver.network(request.network).spec
            pnode, address = self.o.fleet.locate(spec, request.vnode)
            return node_pb2.VNodeLocation(network=request.network, vnode=request.vnode, pnode=pnode, address=address)
        raise AssertionError("unreachable: abort raises")

    def ReportProgress(self, request: node_pb2.ProgressReport,
                       context: grpc.ServicerContext) -> node_pb2.ProgressAck:
        with _statuses(context):
            check_compatible(request.version)
            self.o.inbox.deliver(request.events)
            return node_pb2.ProgressAck(known=True)
        raise AssertionError("unreachable: abort raises")


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, orch: Orchestrator) -> None:
        self.o = orch

    # -- networks ---------------------------------------------------------------------------------
    def _info(self, rec: NetworkRecord) -> orchestrator_pb2.NetworkInfo:
        spec = self.o.driver.network(rec.name).spec
        created = datetime.fromtimestamp(rec.created_at, UTC).isoformat(timespec="seconds")
        return orchestrator_pb2.NetworkInfo(name=rec.name, yaml=rec.yaml, vnodes=len(spec.nodes),
                                            parameters=spec.num_parameters(), step=self.o.driver.step_of(rec.name),
                                            created_at=created)

    def CreateNetwork(self, request: orchestrator_pb2.CreateNetworkRequest,
                      context: grpc.ServicerContext) -> orchestrator_pb2.NetworkInfo:
        with _statuses(context):
            source = request.source or "network"
            spec = parse_network(request.yaml, source=source)
            self._check_vocabularies(spec, source)
            name = check_name("network", request.name or spec.name)
            self.o.store.create_network(NetworkRecord(name, request.yaml))
            log.info("network %s created: %d VNodes", name, len(spec.nodes), extra={"network": name})
            return self._info(self.o.store.get_network(name))
        raise AssertionError("unreachable: abort raises")

    def UpdateNetwork(self, request: orchestrator_pb2.UpdateNetworkRequest,
                      context: grpc.ServicerContext) -> orchestrator_pb2.NetworkInfo:
        """Replace a network's definition; its VNodes start again from their initial parameters."""
        with _statuses(context):
            spec = parse_network(request.yaml, source=request.source or "network")
            self._check_vocabularies(spec, request.source or "network")
            self.o.store.get_network(request.name)
            self._refuse_if_training(request.name)
            self.o.store.update_network(request.name, request.yaml)
            self.o.store.set_network_step(request.name, 0)
            self.o.store.set_placements(request.name, {})
            self.o.driver.forget(request.name)
            return self._info(self.o.store.get_network(request.name))
        raise AssertionError("unreachable: abort raises")

    def _check_vocabularies(self, spec: NetworkSpec, source: str) -> None:
        """Vocabulary ids in tokenizer/detokenizer configs must name stored vocabularies."""
        stored = {v["name"] for v in self.o.data.list_vocabularies()}
        problems = [f"{source}: node {nid!r}: config.vocabulary: unknown vocabulary {vocab!r}; stored: "
                    f"{', '.join(sorted(stored)) or 'none'}"
                    for nid, node in spec.nodes.items()
                    if (vocab := getattr(node.impl.cfg, "vocabulary", None)) is not None and vocab not in stored]
        if problems:
            raise NetworkError(problems)

    def _refuse_if_training(self, network: str) -> None:
        busy = [s.id for s in self.o.store.list_sessions() if s.network == network and s.state == "running"]
        if busy:
            raise Conflict(f"network {network!r} is being trained by session {busy[0]}; suspend it first")

    def DeleteNetwork(self, request: orchestrator_pb2.NetworkRef,
                      context: grpc.ServicerContext) -> orchestrator_pb2.DeleteResponse:
        with _statuses(context):
            self.o.store.get_network(request.name)
            self._refuse_if_training(request.name)
            self.o.driver.forget(request.name)
            return orchestrator_pb2.DeleteResponse(deleted=self.o.store.delete_network(request.name))
        raise AssertionError("unreachable: abort raises")

    def GetNetwork(self, request: orchestrator_pb2.NetworkRef,
                   context: grpc.ServicerContext) -> orchestrator_pb2.NetworkInfo:
        with _statuses(context):
            return self._info(self.o.store.get_network(request.name))
        raise AssertionError("unreachable: abort raises")

    def ListNetworks(self, request: orchestrator_pb2.ListRequest,
                     context: grpc.ServicerContext) -> orchestrator_pb2.ListNetworksResponse:
        with _statuses(context):
            return orchestrator_pb2.ListNetworksResponse(
                networks=[self._info(r) for r in self.o.store.list_networks()])
        raise AssertionError("unreachable: abort raises")

    def InspectNetwork(self, request: orchestrator_pb2.NetworkRef,
                       context: grpc.ServicerContext) -> orchestrator_pb2.InspectNetworkResponse:
        with _statuses(context):
            info = self._info(self.o.store.get_network(request.name))
            pnodes = {p.id: p.address for p in self.o.store.list_pnodes()}
            return orchestrator_pb2.InspectNetworkResponse(network=info, placements=[
                orchestrator_pb2.Placement(vnode=v, pnode=p, address=pnodes.get(p, ""))
                for v, p in sorted(self.o.store.placements(request.name).items())])
        raise AssertionError("unreachable: abort raises")

    def _export(self, name: str) -> bytes:
        """Every VNode's parameters and optimizer state, and the definition, as one safetensors file."""
        rec = self.o.store.get_network(name)
        spec = self.o.driver.network(name).spec
        with self.o.driver.network(name).lock:  # between steps
            state = checkpoints.gather(self.o.fleet, spec, self.o.driver.timeout)
            step = self.o.driver.step_of(name)
        return write_artifact(state, {"network": name, "step": str(step), "seed": str(spec.seed),
                                            "yaml": rec.yaml})

    def _import(self, blob: bytes, name: str) -> orchestrator_pb2.NetworkInfo:
        """Create a network from an export and load its state into the VNodes, wherever they are placed."""
        meta = artifact_metadata(blob)
        spec = parse_stored_network(meta["yaml"], check_name("network", name or meta.get("network", "")))
        state = read_artifact(blob, spec)
        step = int(meta.get("step", "0"))
        self.o.store.create_network(NetworkRecord(spec.name, meta["yaml"], step=step))
        try:
            checkpoints.restore(self.o.fleet, spec, state, step, self.o.driver.timeout)
        except BaseException:
            self.o.driver.forget(spec.name)
            self.o.store.delete_network(spec.name)  # nothing half-imported stays behind
            raise
        log.info("network %s imported at step %d", spec.name, step, extra={"network": spec.name})
        return self._info(self.o.store.get_network(spec.name))

    def ExportNetwork(self, request: orchestrator_pb2.ExportNetworkRequest,
                      context: grpc.ServicerContext) -> Iterator[orchestrator_pb2.BlobChunk]:
        """Every VNode's parameters and optimizer state as one safetensors file, streamed."""
        with _statuses(context):
            blob = self._export(request.name)
        for i in range(0, len(blob), CHUNK):
            yield orchestrator_pb2.BlobChunk(data=blob[i:i + CHUNK])

    def ImportNetwork(self, request_iterator: Iterator[orchestrator_pb2.BlobChunk],
                      context: grpc.ServicerContext) -> orchestrator_pb2.NetworkInfo:
        """A network from an export: its definition, parameters, optimizer state and step."""
        with _statuses(context):
            name, parts = "", []
            for chunk in request_iterator:
                name = name or chunk.name
                parts.append(chunk.data)
            return self._import(b"".join(parts), name)
        raise AssertionError("unreachable: abort raises")

    def CloneNetwork(self, request: orchestrator_pb2.CloneNetworkRequest,
                     context: grpc.ServicerContext) -> orchestrator_pb2.NetworkInfo:
        """A copy of a network under a new name, with its current parameters and optimizer state."""
        with _statuses(context):
            if not request.name:
                raise ValueError("a clone needs a new name")
            return self._import(self._export(request.source), request.name)
        raise AssertionError("unreachable: abort raises")

    # -- execution --------------------------------------------------------------------------------
    def ForwardNetwork(self, request: orchestrator_pb2.ForwardRequest,
                       context: grpc.ServicerContext) -> orchestrator_pb2.ForwardResponse:
        with _statuses(context):
            inputs = {nv.name: codec.decode_value(nv.value) for nv in request.inputs}
            outs = self.o.driver.forward(request.network, inputs, list(request.outputs) or None)
            return orchestrator_pb2.ForwardResponse(outputs=[
                orchestrator_pb2.NamedValue(name=k, value=codec.encode_value(v)) for k, v in outs.items()])
        raise AssertionError("unreachable: abort raises")

    def TrainNetwork(self, request: orchestrator_pb2.TrainRequest,
                     context: grpc.ServicerContext) -> orchestrator_pb2.TrainResponse:
        with _statuses(context):
            self._refuse_if_training(request.network)
            inputs = {nv.name: codec.decode_value(nv.value) for nv in request.inputs}
            costs, step, skipped, _ = self.o.driver.train_step(request.network, inputs, request.micro_batches or 1)
            return orchestrator_pb2.TrainResponse(costs=costs, step=step, skipped=skipped)
        raise AssertionError("unreachable: abort raises")

    def ValidateNetwork(self, request: orchestrator_pb2.ValidateRequest,
                        context: grpc.ServicerContext) -> orchestrator_pb2.ValidateResponse:
        """Mean costs over held-out batches of the dataset's validation split."""
        with _statuses(context):
            spec = self.o.driver.network(request.network).spec
            ds = self.o.data.dataset(request.dataset)
            _, _, seq_len = lm_interface(spec)
            batches, size = request.batches or 4, request.batch_size or 8
            totals: dict[str, float] = {}
            for i in range(batches):
                x, y = ds.batch(request.seed, i, size, seq_len, split="validation")
                for k, v in self.o.driver.costs(request.network, {"tokens": x, "targets": y}).items():
                    totals[k] = totals.get(k, 0.0) + v / batches
            return orchestrator_pb2.ValidateResponse(costs=totals)
        raise AssertionError("unreachable: abort raises")

    def ChatNetwork(self, request: orchestrator_pb2.ChatRequest,
                    context: grpc.ServicerContext) -> Iterator[orchestrator_pb2.ChatChunk]:
        """Stream generated text token by token."""
        with _statuses(context):
            tok = self.o.data.tokenizer(request.vocabulary or self._vocabulary_of(request.network))
            bos = tok.token_to_id("<bos>")
            ids = tok.encode(request.prompt, add_special_tokens=False).ids
            prompt = ids or ([bos] if bos is not None else [])
            new: list[int] = []
            text = ""
            for token in self.o.driver.generate(request.network, prompt, request.max_new_tokens or 64,
                                                request.temperature, request.top_k or None, request.seed):
                if not context.is_active():
                    return
                new.append(token)
                full = tok.decode(new)
                if full.endswith("\ufffd"):
                    yield orchestrator_pb2.ChatChunk(text="", token=token)  # an incomplete UTF-8 sequence
                    continue
                yield orchestrator_pb2.ChatChunk(text=full[len(text):], token=token)
                text = full
            yield orchestrator_pb2.ChatChunk(done=True)

    def _vocabulary_of(self, network: str) -> str:
        """The vocabulary a network was last trained with (through a session), or the only one there is."""
        self.o.store.get_network(network)  # NotFound first
        trained = [s for s in self.o.store.list_sessions() if s.network == network and s.step > 0]
        for rec in reversed(trained):
            with contextlib.suppress(NotFound):
                return str(self.o.data.get_dataset(rec.dataset)["vocabulary"])
        names = [v["name"] for v in self.o.data.list_vocabularies()]
        if len(names) == 1:
            return str(names[0])
        raise ValueError(f"network {network!r} was not trained through a session here; name its vocabulary "
                         f"(one of: {', '.join(names) or 'none stored'})")

    # -- sessions ---------------------------------------------------------------------------------
    def CreateTrainSession(self, request: orchestrator_pb2.CreateTrainSessionRequest,
                           context: grpc.ServicerContext) -> orchestrator_pb2.TrainSessionInfo:
        with _statuses(context):
            rec = self.o.sessions.create(request.network, request.dataset, request.steps, request.batch_size,
                                         request.micro_batches, request.seed, request.checkpoint_every)
            return _session_info(rec)
        raise AssertionError("unreachable: abort raises")

    def StartTrainSession(self, request: orchestrator_pb2.SessionRef,
                          context: grpc.ServicerContext) -> orchestrator_pb2.TrainSessionInfo:
        with _statuses(context):
            try:
                return _session_info(self.o.sessions.start(request.id))
            except ValueError as exc:
                raise Conflict(str(exc)) from None
        raise AssertionError("unreachable: abort raises")

    def SuspendTrainSession(self, request: orchestrator_pb2.SessionRef,
                            context: grpc.ServicerContext) -> orchestrator_pb2.TrainSessionInfo:
        with _statuses(context):
            try:
                return _session_info(self.o.sessions.suspend(request.id, wait=self.o.driver.timeout))
            except ValueError as exc:
                raise Conflict(str(exc)) from None
        raise AssertionError("unreachable: abort raises")

    def ListTrainSessions(self, request: orchestrator_pb2.ListRequest,
                          context: grpc.ServicerContext) -> orchestrator_pb2.ListTrainSessionsResponse:
        return orchestrator_pb2.ListTrainSessionsResponse(sessions=[_session_info(r) for r in self.o.sessions.list()])

    def DeleteTrainSession(self, request: orchestrator_pb2.SessionRef,
                           context: grpc.ServicerContext) -> orchestrator_pb2.DeleteResponse:
        with _statuses(context):
            return orchestrator_pb2.DeleteResponse(deleted=self.o.sessions.delete(request.id))
        raise AssertionError("unreachable: abort raises")

    def ListenTrainSession(self, request: orchestrator_pb2.SessionRef,
                           context: grpc.ServicerContext) -> Iterator[orchestrator_pb2.StepEvent]:
        with _statuses(context):
            events = self.o.sessions.listen(request.id, context.is_active)
            first = next(events, None)
        if first is None:
            return
        yield _step_event(first)
        for ev in events:
            yield _step_event(ev)

    # -- vocabularies and datasets ------------------------------------------------------------------
    def CreateVocabulary(self, request: orchestrator_pb2.CreateVocabularyRequest,
                         context: grpc.ServicerContext) -> orchestrator_pb2.VocabularyInfo:
        with _statuses(context):
            check_name("vocabulary", request.name)
            if request.tokenizer_json:
                text = request.tokenizer_json
            elif request.texts:
                text = train_vocabulary(request.texts, request.vocab_size or 4096).to_str()
            else:
                raise ValueError("a vocabulary needs either tokenizer JSON or texts to train on")
            info = self.o.data.create_vocabulary(request.name, text)
            return orchestrator_pb2.VocabularyInfo(name=info["name"], vocab_size=info["vocab_size"])
        raise AssertionError("unreachable: abort raises")

    def GetVocabulary(self, request: orchestrator_pb2.NameRef,
                      context: grpc.ServicerContext) -> orchestrator_pb2.VocabularyInfo:
        with _statuses(context):
            info = self.o.data.get_vocabulary(request.name)
            return orchestrator_pb2.VocabularyInfo(name=info["name"], vocab_size=info["vocab_size"],
                                                   tokenizer_json=self.o.data.tokenizer(request.name).to_str())
        raise AssertionError("unreachable: abort raises")

    def ListVocabularies(self, request: orchestrator_pb2.ListRequest,
                         context: grpc.ServicerContext) -> orchestrator_pb2.ListVocabulariesResponse:
        return orchestrator_pb2.ListVocabulariesResponse(vocabularies=[
            orchestrator_pb2.VocabularyInfo(name=v["name"], vocab_size=v["vocab_size"])
            for v in self.o.data.list_vocabularies()])

    def DeleteVocabulary(self, request: orchestrator_pb2.NameRef,
                         context: grpc.ServicerContext) -> orchestrator_pb2.DeleteResponse:
        with _statuses(context):
            self.o.data.get_vocabulary(request.name)
            return orchestrator_pb2.DeleteResponse(deleted=self.o.data.delete_vocabulary(request.name))
        raise AssertionError("unreachable: abort raises")

    def CreateDataset(self, request_iterator: Iterator[orchestrator_pb2.DatasetUpload],
                      context: grpc.ServicerContext) -> orchestrator_pb2.DatasetInfo:
        with _statuses(context):
            first = next(request_iterator, None)
            if first is None or not first.name or not first.vocabulary:
                raise ValueError("a dataset upload starts with a message naming the dataset and its vocabulary")

            def texts() -> Iterator[str]:
                """Whole documents, joined from their pieces (one document in memory at a time)."""
                pieces: list[str] = []
                for m in itertools.chain([first], request_iterator):
                    pieces.append(m.text)
                    if m.end_of_document:
                        yield "".join(pieces)
                        pieces = []
                if any(pieces):
                    yield "".join(pieces)

            info = self.o.data.create_dataset(first.name, first.vocabulary, texts(),
                                              first.validation_fraction or 0.05)
            return _dataset_info(info)
        raise AssertionError("unreachable: abort raises")

    def GetDataset(self, request: orchestrator_pb2.NameRef,
                   context: grpc.ServicerContext) -> orchestrator_pb2.DatasetInfo:
        with _statuses(context):
            return _dataset_info(self.o.data.get_dataset(request.name))
        raise AssertionError("unreachable: abort raises")

    def ExploreDataset(self, request: orchestrator_pb2.ExploreDatasetRequest,
                       context: grpc.ServicerContext) -> orchestrator_pb2.ExploreDatasetResponse:
        with _statuses(context):
            info, sample = self.o.data.explore(request.name, request.sample_tokens or 64)
            return orchestrator_pb2.ExploreDatasetResponse(info=_dataset_info(info), sample=sample)
        raise AssertionError("unreachable: abort raises")

    def ListDatasets(self, request: orchestrator_pb2.ListRequest,
                     context: grpc.ServicerContext) -> orchestrator_pb2.ListDatasetsResponse:
        return orchestrator_pb2.ListDatasetsResponse(datasets=[_dataset_info(d) for d in self.o.data.list_datasets()])

    def DeleteDataset(self, request: orchestrator_pb2.NameRef,
                      context: grpc.ServicerContext) -> orchestrator_pb2.DeleteResponse:
        with _statuses(context):
            self.o.data.get_dataset(request.name)
            users = [s.id for s in self.o.store.list_sessions() if s.dataset == request.name and s.state == "running"]
            if users:
                raise Conflict(f"dataset {request.name!r} feeds running session {users[0]}; suspend it first")
            return orchestrator_pb2.DeleteResponse(deleted=self.o.data.delete_dataset(request.name))
        raise AssertionError("unreachable: abort raises")

    def SplitDataset(self, request: orchestrator_pb2.SplitDatasetRequest,
                     context: grpc.ServicerContext) -> orchestrator_pb2.DatasetInfo:
        with _statuses(context):
            return _dataset_info(self.o.data.split_dataset(request.name, request.validation_fraction))
        raise AssertionError("unreachable: abort raises")

    # -- checkpoints ---------------------------------------------------------------------------------
    def _session_checkpoints(self, session_id: str) -> list[dict[str, Any]]:
        rec = self.o.store.get_session(session_id)
        return [m for m in self.o.checkpoints.list(rec.network) if m.get("session") == rec.id]

    def ListCheckpoints(self, request: orchestrator_pb2.SessionRef,
                        context: grpc.ServicerContext) -> orchestrator_pb2.ListCheckpointsResponse:
        with _statuses(context):
            return orchestrator_pb2.ListCheckpointsResponse(checkpoints=[
                orchestrator_pb2.CheckpointInfo(session=m["session"], network=m["network"], step=m["step"],
                                                session_step=m["session_step"], bytes=m["bytes"],
                                                created_at=m["created_at"])
                for m in self._session_checkpoints(request.id)])
        raise AssertionError("unreachable: abort raises")

    def ExportCheckpoint(self, request: orchestrator_pb2.ExportCheckpointRequest,
                         context: grpc.ServicerContext) -> Iterator[orchestrator_pb2.BlobChunk]:
        """One checkpoint as a self-describing artifact: parameters, optimizer state, YAML, training facts."""
        with _statuses(context):
            found = self._session_checkpoints(request.session)
            if request.has_step:
                found = [m for m in found if m["session_step"] == request.session_step]
            if not found:
                raise NotFound(f"session {request.session} has no checkpoint"
                               + (f" at step {request.session_step}" if request.has_step else ""))
            m = found[-1]
            facts = {f"training.{k}": str(m[k]) for k in ("session", "session_step", "steps", "seed", "dataset",
                                                          "dataset_sha256", "batch_size", "micro_batches") if k in m}
            blob = write_artifact(self.o.checkpoints.read(m), {
                "network": m["network"], "step": str(m["step"]), "yaml": m["yaml"],
                "seed": str(parse_stored_network(m["yaml"], m["network"]).seed), **facts})
        for i in range(0, len(blob), CHUNK):
            yield orchestrator_pb2.BlobChunk(data=blob[i:i + CHUNK])

    # -- fleet and health ---------------------------------------------------------------------------
    def ListPNodes(self, request: orchestrator_pb2.ListRequest,
                   context: grpc.ServicerContext) -> orchestrator_pb2.ListPNodesResponse:
        hosted = self.o.fleet.vnodes_by_pnode()
        rows = []
        for p in self.o.store.list_pnodes():
            hw = p.hardware
            major, minor, patch = (int(x) for x in str(hw.get("version", "0.0.0")).split("."))
            rows.append(orchestrator_pb2.PNodeInfo(
                id=p.id, address=p.address, state=p.state, load=p.load, last_seen=p.last_seen,
                vnodes=sorted(hosted.get(p.id, [])),
                version=common_pb2.ProtocolVersion(major=major, minor=minor, patch=patch),
                hardware=node_pb2.Hardware(cpu_cores=hw.get("cpu_cores", 0), memory_bytes=hw.get("memory_bytes", 0),
                                           device=hw.get("device", "cpu"),
                                           memory_budget_bytes=hw.get("memory_budget_bytes", 0),
                                           threads=hw.get("threads", 0))))
        return orchestrator_pb2.ListPNodesResponse(pnodes=rows)

    def Health(self, request: common_pb2.HealthRequest, context: grpc.ServicerContext) -> common_pb2.HealthResponse:
        return common_pb2.HealthResponse(status="serving", version=version_message(), software_version=__version__)


def _step_event(ev: dict[str, Any]) -> orchestrator_pb2.StepEvent:
    return orchestrator_pb2.StepEvent(
        session=ev["session"], step=ev["step"], steps=ev["steps"], loss=ev["loss"],
        tokens_per_second=ev["tokens_per_second"], learning_rates=ev["learning_rates"],
        duration_seconds=ev["duration_seconds"], state=ev["state"], error=ev["error"])
