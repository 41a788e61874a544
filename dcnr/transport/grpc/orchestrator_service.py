"""`OrchestratorService` over gRPC: requests to the orchestrator's services, their results to protobuf.

Each handler converts and calls; nothing else. Errors are not handled here: the server
wraps this servicer once with `guarded`, which answers each `dcnr.errors` class with its
status. A zero or empty protobuf field means "not given": the default applies.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from dcnr import __version__
from dcnr.errors import InvalidArgument
from dcnr.orchestrator import datasets
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.store import PNodeRecord, SessionRecord, Standing, ValidationEvent
from dcnr.proto.v2 import common_pb2, node_pb2, orchestrator_pb2_grpc
from dcnr.proto.v2 import orchestrator_pb2 as pb
from dcnr.transport.control import NetworkInfo
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.codec import version_message
from dcnr.transport.grpc.security import current_caller

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator

CHUNK = 1 << 20  # bytes per streamed blob message
DEFAULT_EVENTS = 1000  # validation events listed when the request names no limit


def _network(info: NetworkInfo) -> pb.NetworkInfo:
    return pb.NetworkInfo(name=info.name, yaml=info.yaml, vnodes=info.vnodes, parameters=info.parameters,
                          step=info.step, created_at=info.created_at)


def _session(rec: SessionRecord) -> pb.TrainSessionInfo:
    return pb.TrainSessionInfo(id=rec.id, network=rec.network, dataset=rec.dataset, state=rec.state, step=rec.step,
                               steps=rec.steps, batch_size=rec.batch_size, micro_batches=rec.micro_batches,
                               seed=rec.seed, error=rec.error, validation=rec.validation)


def _pnode(p: PNodeRecord | None, pnode_id: str, standing: Standing, hosted: list[str]) -> pb.PNodeInfo:
    """A PNode as listed: its record (None: it is not registered), its standing, the VNodes placed on it."""
    quarantined = standing.quarantined()
    fields: dict[str, Any] = {"state": "unregistered"}
    if p is not None:
        hw = p.hardware
        major, minor, patch = (int(x) for x in str(hw.get("version", "0.0.0")).split("."))
        fields = {"address": p.address, "state": p.state, "load": p.load, "last_seen": p.last_seen,
                  "version": common_pb2.ProtocolVersion(major=major, minor=minor, patch=patch),
                  "hardware": codec.hardware_message(hw), "name": str(hw.get("name", ""))}
    return pb.PNodeInfo(id=pnode_id, vnodes=sorted(hosted), trusted=standing.trusted, charges=standing.charges,
                        quarantined_until=standing.quarantined_until if quarantined else 0.0,
                        quarantine_reason=standing.reason if quarantined else "", **fields)


def _validation_event(e: ValidationEvent) -> pb.ValidationEventInfo:
    return pb.ValidationEventInfo(seq=e.seq, at=e.at, network=e.network, session=e.session, step=e.step, unit=e.unit,
                                  accused=e.accused, verifier=e.verifier, referee=e.referee, verdict=e.verdict,
                                  detail=e.detail)


def _step_event(ev: dict[str, Any]) -> pb.StepEvent:
    held_out = ev.get("held_out_loss")
    return pb.StepEvent(session=ev["session"], step=ev["step"], steps=ev["steps"], loss=ev["loss"],
                        tokens_per_second=ev["tokens_per_second"], learning_rates=ev["learning_rates"],
                        duration_seconds=ev["duration_seconds"], state=ev["state"], error=ev["error"],
                        held_out_loss=held_out or 0.0, has_held_out_loss=held_out is not None, at=ev.get("at", 0.0))


def _dataset(d: dict[str, Any]) -> pb.DatasetInfo:
    return pb.DatasetInfo(name=d["name"], vocabulary=d["vocabulary"], tokens=d["tokens"],
                          train_tokens=d["train_tokens"], validation_tokens=d["validation_tokens"], sha256=d["sha256"])


def _inputs(values: Any) -> dict[str, Any]:
    return {nv.name: codec.decode_value(nv.value) for nv in values}


def _chunks(blob: bytes) -> Iterator[pb.BlobChunk]:
    for i in range(0, len(blob), CHUNK):
        yield pb.BlobChunk(data=blob[i:i + CHUNK])


def _documents(first: pb.DatasetUpload, rest: Iterator[pb.DatasetUpload], limits: Limits) -> Iterator[str]:
    """Whole documents, joined from the pieces of an upload (one document in memory at a time); a document
    passing `max_document_bytes` is refused before its next piece is read."""
    document, size, count = io.StringIO(), 0, 1  # a buffer, not a list: a piece may be one character
    for m in itertools.chain([first], rest):
        size = limits.check("max_document_bytes", size + len(m.text.encode()),
                            f"dataset {first.name!r}: document {count}")
        document.write(m.text)
        if m.end_of_document:
            yield document.getvalue()
            document, size, count = io.StringIO(), 0, count + 1
    if document.tell():
        yield document.getvalue()


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, orch: Orchestrator) -> None:
        self.o = orch

    # -- networks ---------------------------------------------------------------------------------
    def CreateNetwork(self, request: pb.CreateNetworkRequest, context: grpc.ServicerContext) -> pb.NetworkInfo:
        return _network(self.o.networks.create(request.yaml, request.source or "network", request.name))

    def UpdateNetwork(self, request: pb.UpdateNetworkRequest, context: grpc.ServicerContext) -> pb.NetworkInfo:
        return _network(self.o.networks.update(request.name, request.yaml, request.source or "network"))

    def DeleteNetwork(self, request: pb.NetworkRef, context: grpc.ServicerContext) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=self.o.networks.delete(request.name))

    def GetNetwork(self, request: pb.NetworkRef, context: grpc.ServicerContext) -> pb.NetworkInfo:
        return _network(self.o.networks.info(request.name))

    def ListNetworks(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListNetworksResponse:
        return pb.ListNetworksResponse(networks=[_network(i) for i in self.o.networks.list_all()])

    def InspectNetwork(self, request: pb.NetworkRef, context: grpc.ServicerContext) -> pb.InspectNetworkResponse:
        info = self.o.networks.info(request.name)
        return pb.InspectNetworkResponse(network=_network(info), placements=[
            pb.Placement(vnode=p.vnode, pnode=p.pnode, address=p.address)
            for p in self.o.networks.placements(request.name)])

    def ExportNetwork(self, request: pb.ExportNetworkRequest,
                      context: grpc.ServicerContext) -> Iterator[pb.BlobChunk]:
        yield from _chunks(self.o.networks.export(request.name, live=request.live))

    def ImportNetwork(self, request_iterator: Iterator[pb.BlobChunk],
                      context: grpc.ServicerContext) -> pb.NetworkInfo:
        """The first message that names one gives the network's name; the chunks' bytes are the artifact,
        refused as soon as they pass `max_artifact_bytes`."""
        name, parts, size = "", [], 0
        for chunk in request_iterator:
            name = name or chunk.name
            size = self.o.limits.check("max_artifact_bytes", size + len(chunk.data), "the imported network artifact")
            parts.append(chunk.data)
        return _network(self.o.networks.import_artifact(b"".join(parts), name))

    def CloneNetwork(self, request: pb.CloneNetworkRequest, context: grpc.ServicerContext) -> pb.NetworkInfo:
        return _network(self.o.networks.clone(request.source, request.name))

    # -- execution --------------------------------------------------------------------------------
    def ForwardNetwork(self, request: pb.ForwardRequest, context: grpc.ServicerContext) -> pb.ForwardResponse:
        outs = self.o.serving.forward(request.network, _inputs(request.inputs), list(request.outputs))
        return pb.ForwardResponse(outputs=[pb.NamedValue(name=k, value=codec.encode_value(v))
                                           for k, v in outs.items()])

    def TrainNetwork(self, request: pb.TrainRequest, context: grpc.ServicerContext) -> pb.TrainResponse:
        result = self.o.serving.train(request.network, _inputs(request.inputs), request.micro_batches or 1)
        return pb.TrainResponse(costs=result.costs, step=result.step, skipped=result.skipped)

    def ValidateNetwork(self, request: pb.ValidateRequest, context: grpc.ServicerContext) -> pb.ValidateResponse:
        return pb.ValidateResponse(costs=self.o.serving.validate(
            request.network, request.dataset, request.batches or None, request.batch_size or None, request.seed))

    def ChatNetwork(self, request: pb.ChatRequest, context: grpc.ServicerContext) -> Iterator[pb.ChatChunk]:
        """Generated text, streamed token by token; a last chunk says it is done."""
        for piece in self.o.serving.chat(request.network, request.prompt, request.vocabulary,
                                         request.max_new_tokens or None, request.temperature,
                                         request.top_k or None, request.seed):
            if not context.is_active():
                return
            yield pb.ChatChunk(text=piece.text, token=piece.token)
        yield pb.ChatChunk(done=True)

    # -- sessions ---------------------------------------------------------------------------------
    def CreateTrainSession(self, request: pb.CreateTrainSessionRequest,
                           context: grpc.ServicerContext) -> pb.TrainSessionInfo:
        return _session(self.o.sessions.create(request.network, request.dataset, request.steps, request.batch_size,
                                               request.micro_batches, request.seed, request.checkpoint_every,
                                               request.validation))

    def StartTrainSession(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.TrainSessionInfo:
        return _session(self.o.sessions.start(request.id))

    def SuspendTrainSession(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.TrainSessionInfo:
        return _session(self.o.sessions.suspend(request.id, wait=self.o.driver.timeout))

    def ListTrainSessions(self, request: pb.ListRequest,
                          context: grpc.ServicerContext) -> pb.ListTrainSessionsResponse:
        return pb.ListTrainSessionsResponse(sessions=[_session(r) for r in self.o.sessions.list()])

    def DeleteTrainSession(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=self.o.sessions.delete(request.id))

    def ListenTrainSession(self, request: pb.ListenTrainSessionRequest,
                           context: grpc.ServicerContext) -> Iterator[pb.StepEvent]:
        from_step = request.from_step if request.from_history else None
        for ev in self.o.sessions.listen(request.id, context.is_active, from_step):
            yield _step_event(ev)

    def GetTrainSessionHistory(self, request: pb.TrainSessionHistoryRequest,
                               context: grpc.ServicerContext) -> pb.TrainSessionHistory:
        self.o.store.get_session(request.id)  # NotFound for an unknown session
        return pb.TrainSessionHistory(events=[_step_event(ev) for ev in self.o.history.steps(
            request.id, request.from_step, request.limit)])

    # -- checkpoints ---------------------------------------------------------------------------------
    def ListCheckpoints(self, request: pb.SessionRef, context: grpc.ServicerContext) -> pb.ListCheckpointsResponse:
        return pb.ListCheckpointsResponse(checkpoints=[
            pb.CheckpointInfo(session=m["session"], network=m["network"], step=m["step"],
                              session_step=m["session_step"], bytes=m["bytes"], created_at=m["created_at"])
            for m in self.o.networks.session_checkpoints(request.id)])

    def ExportCheckpoint(self, request: pb.ExportCheckpointRequest,
                         context: grpc.ServicerContext) -> Iterator[pb.BlobChunk]:
        step = request.session_step if request.has_step else None
        yield from _chunks(self.o.networks.export_checkpoint(request.session, step))

    # -- vocabularies and datasets ------------------------------------------------------------------
    def CreateVocabulary(self, request: pb.CreateVocabularyRequest,
                         context: grpc.ServicerContext) -> pb.VocabularyInfo:
        info = datasets.create_vocabulary(self.o.data, request.name, request.tokenizer_json, list(request.texts),
                                          request.vocab_size or None)
        return pb.VocabularyInfo(name=info["name"], vocab_size=info["vocab_size"])

    def GetVocabulary(self, request: pb.NameRef, context: grpc.ServicerContext) -> pb.VocabularyInfo:
        info = self.o.data.get_vocabulary(request.name)
        return pb.VocabularyInfo(name=info["name"], vocab_size=info["vocab_size"],
                                 tokenizer_json=self.o.data.tokenizer(request.name).to_str())

    def ListVocabularies(self, request: pb.ListRequest,
                         context: grpc.ServicerContext) -> pb.ListVocabulariesResponse:
        return pb.ListVocabulariesResponse(vocabularies=[pb.VocabularyInfo(name=v["name"], vocab_size=v["vocab_size"])
                                                         for v in self.o.data.list_vocabularies()])

    def DeleteVocabulary(self, request: pb.NameRef, context: grpc.ServicerContext) -> pb.DeleteResponse:
        self.o.data.get_vocabulary(request.name)
        return pb.DeleteResponse(deleted=self.o.data.delete_vocabulary(request.name))

    def CreateDataset(self, request_iterator: Iterator[pb.DatasetUpload],
                      context: grpc.ServicerContext) -> pb.DatasetInfo:
        """The first message names the dataset and its vocabulary; the messages' texts are its documents."""
        first = next(request_iterator, None)
        if first is None or not first.name or not first.vocabulary:
            raise InvalidArgument("a dataset upload starts with a message naming the dataset and its vocabulary")
        return _dataset(self.o.data.create_dataset(first.name, first.vocabulary,
                                                   _documents(first, request_iterator, self.o.limits),
                                                   first.validation_fraction or 0.05))

    def GetDataset(self, request: pb.NameRef, context: grpc.ServicerContext) -> pb.DatasetInfo:
        return _dataset(self.o.data.get_dataset(request.name))

    def ExploreDataset(self, request: pb.ExploreDatasetRequest,
                       context: grpc.ServicerContext) -> pb.ExploreDatasetResponse:
        info, sample = self.o.data.explore(request.name, request.sample_tokens or 64)
        return pb.ExploreDatasetResponse(info=_dataset(info), sample=sample)

    def ListDatasets(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListDatasetsResponse:
        return pb.ListDatasetsResponse(datasets=[_dataset(d) for d in self.o.data.list_datasets()])

    def DeleteDataset(self, request: pb.NameRef, context: grpc.ServicerContext) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=datasets.delete_dataset(self.o.data, self.o.store, request.name))

    def SplitDataset(self, request: pb.SplitDatasetRequest, context: grpc.ServicerContext) -> pb.DatasetInfo:
        return _dataset(self.o.data.split_dataset(request.name, request.validation_fraction))

    # -- fleet and health ---------------------------------------------------------------------------
    def ListPNodes(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListPNodesResponse:
        hosted = self.o.fleet.vnodes_by_pnode()
        return pb.ListPNodesResponse(pnodes=[_pnode(p, p.id, self.o.standings.get(p.id), hosted.get(p.id, []))
                                             for p in self.o.store.list_pnodes()])

    def _pnode_now(self, pnode_id: str, standing: Standing) -> pb.PNodeInfo:
        """The PNode's row after its standing changed; one that left is shown by its standing alone."""
        rec = next((p for p in self.o.store.list_pnodes() if p.id == pnode_id), None)
        return _pnode(rec, pnode_id, standing, self.o.fleet.vnodes_by_pnode().get(pnode_id, []))

    def TrustPNode(self, request: pb.TrustPNodeRequest, context: grpc.ServicerContext) -> pb.PNodeInfo:
        return self._pnode_now(request.pnode, self.o.standings.trust(request.pnode, request.trusted,
                                                                     by=str(current_caller())))

    def ReleasePNode(self, request: node_pb2.PNodeRef, context: grpc.ServicerContext) -> pb.PNodeInfo:
        return self._pnode_now(request.id, self.o.standings.release(request.id, by=str(current_caller())))

    def ListRelays(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListRelaysResponse:
        relays = self.o.relays
        return pb.ListRelaysResponse(relays=[pb.RelayInfo(
            id=r.id, address=r.address, state=r.state, attached=r.attached, bytes_forwarded=r.bytes_forwarded,
            last_seen=r.last_seen, pnodes=relays.assigned(r.id), hop_bytes=r.hop_bytes) for r in relays.records()])

    def ListValidationEvents(self, request: pb.ListValidationEventsRequest,
                             context: grpc.ServicerContext) -> pb.ListValidationEventsResponse:
        events = self.o.standings.events(request.session, request.network, request.limit or DEFAULT_EVENTS)
        return pb.ListValidationEventsResponse(events=[_validation_event(e) for e in events])

    # -- access -------------------------------------------------------------------------------------
    def CreateToken(self, request: pb.CreateTokenRequest, context: grpc.ServicerContext) -> pb.TokenInfo:
        if request.expires_in_seconds < 0:
            raise InvalidArgument(f"expires_in_seconds must not be negative, got {request.expires_in_seconds}")
        secret = self.o.tokens.create(request.name, request.role, request.expires_in_seconds or None)
        rec = next(t for t in self.o.tokens.list() if t.name == request.name)
        return pb.TokenInfo(name=rec.name, role=rec.role, created_at=rec.created_at, expires_at=rec.expires_at,
                            token=secret)

    def ListTokens(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=[pb.TokenInfo(name=t.name, role=t.role, created_at=t.created_at,
                                                          expires_at=t.expires_at) for t in self.o.tokens.list()])

    def RevokeToken(self, request: pb.NameRef, context: grpc.ServicerContext) -> pb.DeleteResponse:
        return pb.DeleteResponse(deleted=self.o.tokens.revoke(request.name))

    def Health(self, request: common_pb2.HealthRequest, context: grpc.ServicerContext) -> common_pb2.HealthResponse:
        return common_pb2.HealthResponse(status="serving", version=version_message(), software_version=__version__)
