"""The gRPC side of `dcnr.Client`: `OrchestratorService` calls with plain values in and out.

One method per RPC. Requests are built from Python values, answers become the
dataclasses of `dcnr.transport.control`, tensors go through `dcnr.transport.grpc.codec`, and a
failed call raises the `dcnr.errors` class of its status (a refused connection is an
`Unavailable` that names the address).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import grpc

from dcnr.errors import DcnrError, Unavailable
from dcnr.proto.v2 import common_pb2, node_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.security.pki import ORCHESTRATOR_TLS_NAME
from dcnr.transport.control import (
    ChatChunk,
    CheckpointInfo,
    DatasetInfo,
    DatasetSample,
    Hardware,
    Health,
    NetworkInfo,
    NetworkPlacement,
    Placement,
    PNodeInfo,
    RelayInfo,
    SessionInfo,
    StepEvent,
    TokenInfo,
    TrainResult,
    ValidationEventInfo,
    VocabularyInfo,
)
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.errors import from_rpc_error
from dcnr.transport.grpc.security import secure_channel

T = TypeVar("T")
pb = orchestrator_pb2


def _error(exc: grpc.RpcError, address: str) -> DcnrError:
    error = from_rpc_error(exc)
    if isinstance(error, Unavailable):
        return Unavailable(f"cannot reach the orchestrator at {address} ({error}); is `dcnr orchestrator` running "
                           "there, and is the address right (--orchestrator or DCNR_ORCHESTRATOR)?")
    return error


def _version(v: common_pb2.ProtocolVersion) -> str:
    return f"{v.major}.{v.minor}.{v.patch}"


def _network(n: orchestrator_pb2.NetworkInfo) -> NetworkInfo:
    return NetworkInfo(name=n.name, yaml=n.yaml, vnodes=n.vnodes, parameters=n.parameters, step=n.step,
                       created_at=n.created_at)


def _session(s: orchestrator_pb2.TrainSessionInfo) -> SessionInfo:
    return SessionInfo(id=s.id, network=s.network, dataset=s.dataset, state=s.state, step=s.step, steps=s.steps,
                       batch_size=s.batch_size, micro_batches=s.micro_batches, seed=s.seed, error=s.error,
                       validation=s.validation)


def _event(e: orchestrator_pb2.StepEvent) -> StepEvent:
    return StepEvent(session=e.session, step=e.step, steps=e.steps, loss=None if math.isnan(e.loss) else e.loss,
                     tokens_per_second=e.tokens_per_second, learning_rates=dict(e.learning_rates),
                     duration_seconds=e.duration_seconds, state=e.state, error=e.error,
                     held_out_loss=e.held_out_loss if e.has_held_out_loss else None, at=e.at)


def _vocabulary(v: orchestrator_pb2.VocabularyInfo) -> VocabularyInfo:
    return VocabularyInfo(name=v.name, vocab_size=v.vocab_size, tokenizer_json=v.tokenizer_json)


def _dataset(d: orchestrator_pb2.DatasetInfo) -> DatasetInfo:
    return DatasetInfo(name=d.name, vocabulary=d.vocabulary, tokens=d.tokens, train_tokens=d.train_tokens,
                       validation_tokens=d.validation_tokens, sha256=d.sha256)


def _pnode(p: orchestrator_pb2.PNodeInfo) -> PNodeInfo:
    hw = p.hardware
    return PNodeInfo(id=p.id, address=p.address, state=p.state, load=p.load, last_seen=p.last_seen,
                     version=_version(p.version), vnodes=tuple(p.vnodes), name=p.name,
                     hardware=Hardware(cpu_cores=hw.cpu_cores, memory_bytes=hw.memory_bytes, device=hw.device,
                                       memory_budget_bytes=hw.memory_budget_bytes, threads=hw.threads),
                     trusted=p.trusted, charges=p.charges, quarantined_until=p.quarantined_until,
                     quarantine_reason=p.quarantine_reason)


def _validation_event(e: orchestrator_pb2.ValidationEventInfo) -> ValidationEventInfo:
    return ValidationEventInfo(seq=e.seq, at=e.at, network=e.network, session=e.session, step=e.step, unit=e.unit,
                               accused=e.accused, verifier=e.verifier, referee=e.referee, verdict=e.verdict,
                               detail=e.detail)


def _checkpoint(m: orchestrator_pb2.CheckpointInfo) -> CheckpointInfo:
    return CheckpointInfo(session=m.session, network=m.network, step=m.step, session_step=m.session_step,
                          bytes=m.bytes, created_at=m.created_at)


def _values(values: Mapping[str, Any]) -> list[orchestrator_pb2.NamedValue]:
    return [pb.NamedValue(name=k, value=codec.encode_value(v)) for k, v in values.items()]


class GrpcControl:
    """A channel to one orchestrator's `OrchestratorService`; `close` releases it."""

    def __init__(self, address: str, ca_pem: bytes, token: str, timeout: float | None,
                 max_message_bytes: int) -> None:
        self.address = address
        self.timeout = timeout
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_reconnect_backoff_ms", 5000)]  # an orchestrator that restarts is found again soon
        self._channel = secure_channel(address, ca_pem, ORCHESTRATOR_TLS_NAME, options, token=token)
        self._stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, rpc)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None

    def _stream(self, rpc: str, request: Any, convert: Callable[[Any], T | None],
                timeout: float | None) -> Iterator[T]:
        """Answers of a server stream as they come; leaving the loop early cancels the call."""
        call = getattr(self._stub, rpc)(request, timeout=timeout)
        try:
            for message in call:
                item = convert(message)
                if item is not None:
                    yield item
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None
        finally:
            call.cancel()

    # -- networks --
    def create_network(self, yaml: str, name: str, source: str) -> NetworkInfo:
        return _network(self._call("CreateNetwork", pb.CreateNetworkRequest(yaml=yaml, name=name, source=source)))

    def update_network(self, name: str, yaml: str, source: str) -> NetworkInfo:
        return _network(self._call("UpdateNetwork", pb.UpdateNetworkRequest(name=name, yaml=yaml, source=source)))

    def delete_network(self, name: str) -> bool:
        return bool(self._call("DeleteNetwork", pb.NetworkRef(name=name)).deleted)

    def get_network(self, name: str) -> NetworkInfo:
        return _network(self._call("GetNetwork", pb.NetworkRef(name=name)))

    def list_networks(self) -> list[NetworkInfo]:
        return [_network(n) for n in self._call("ListNetworks", pb.ListRequest()).networks]

    def inspect_network(self, name: str) -> NetworkPlacement:
        r = self._call("InspectNetwork", pb.NetworkRef(name=name))
        return NetworkPlacement(network=_network(r.network), placements=tuple(
            Placement(vnode=p.vnode, pnode=p.pnode, address=p.address) for p in r.placements))

    def export_network(self, name: str, live: bool = False) -> Iterator[bytes]:
        return self._stream("ExportNetwork", pb.ExportNetworkRequest(name=name, live=live), lambda c: c.data,
                            self.timeout)

    def import_network(self, chunks: Iterable[bytes], name: str) -> NetworkInfo:
        def messages() -> Iterator[orchestrator_pb2.BlobChunk]:
            yield pb.BlobChunk(name=name)
            for data in chunks:
                yield pb.BlobChunk(data=data)
        return _network(self._call("ImportNetwork", messages()))

    def clone_network(self, source: str, name: str) -> NetworkInfo:
        return _network(self._call("CloneNetwork", pb.CloneNetworkRequest(source=source, name=name)))

    # -- execution --
    def forward(self, network: str, inputs: Mapping[str, Any], outputs: list[str]) -> dict[str, Any]:
        r = self._call("ForwardNetwork", pb.ForwardRequest(network=network, inputs=_values(inputs), outputs=outputs))
        return {nv.name: codec.decode_value(nv.value) for nv in r.outputs}

    def train_step(self, network: str, inputs: Mapping[str, Any], micro_batches: int) -> TrainResult:
        r = self._call("TrainNetwork", pb.TrainRequest(network=network, inputs=_values(inputs),
                                                       micro_batches=micro_batches))
        return TrainResult(costs=dict(r.costs), step=r.step, skipped=r.skipped)

    def validate(self, network: str, dataset: str, batches: int, batch_size: int, seed: int) -> dict[str, float]:
        return dict(self._call("ValidateNetwork", pb.ValidateRequest(
            network=network, dataset=dataset, batches=batches, batch_size=batch_size, seed=seed)).costs)

    def chat(self, network: str, vocabulary: str, prompt: str, max_new_tokens: int, temperature: float,
             top_k: int, seed: int) -> Iterator[ChatChunk]:
        request = pb.ChatRequest(network=network, vocabulary=vocabulary, prompt=prompt, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_k=top_k, seed=seed)
        return self._stream("ChatNetwork", request,
                            lambda c: None if c.done else ChatChunk(text=c.text, token=c.token), self.timeout)

    # -- sessions --
    def create_session(self, network: str, dataset: str, steps: int, batch_size: int, micro_batches: int, seed: int,
                       checkpoint_every: int, validation: str) -> SessionInfo:
        return _session(self._call("CreateTrainSession", pb.CreateTrainSessionRequest(
            network=network, dataset=dataset, steps=steps, batch_size=batch_size, micro_batches=micro_batches,
            seed=seed, checkpoint_every=checkpoint_every, validation=validation)))

    def start_session(self, session_id: str) -> SessionInfo:
        return _session(self._call("StartTrainSession", pb.SessionRef(id=session_id)))

    def suspend_session(self, session_id: str) -> SessionInfo:
        return _session(self._call("SuspendTrainSession", pb.SessionRef(id=session_id)))

    def list_sessions(self) -> list[SessionInfo]:
        return [_session(s) for s in self._call("ListTrainSessions", pb.ListRequest()).sessions]

    def delete_session(self, session_id: str) -> bool:
        return bool(self._call("DeleteTrainSession", pb.SessionRef(id=session_id)).deleted)

    def listen_session(self, session_id: str, timeout: float | None, from_step: int | None = None
                       ) -> Iterator[StepEvent]:
        request = pb.ListenTrainSessionRequest(id=session_id, from_history=from_step is not None,
                                               from_step=from_step or 0)
        return self._stream("ListenTrainSession", request, _event, timeout)

    def session_history(self, session_id: str, from_step: int, limit: int) -> list[StepEvent]:
        return [_event(e) for e in self._call("GetTrainSessionHistory", pb.TrainSessionHistoryRequest(
            id=session_id, from_step=from_step, limit=limit)).events]

    # -- vocabularies and datasets --
    def create_vocabulary(self, name: str, tokenizer_json: str) -> VocabularyInfo:
        return _vocabulary(self._call("CreateVocabulary", pb.CreateVocabularyRequest(
            name=name, tokenizer_json=tokenizer_json)))

    def get_vocabulary(self, name: str) -> VocabularyInfo:
        return _vocabulary(self._call("GetVocabulary", pb.NameRef(name=name)))

    def list_vocabularies(self) -> list[VocabularyInfo]:
        return [_vocabulary(v) for v in self._call("ListVocabularies", pb.ListRequest()).vocabularies]

    def delete_vocabulary(self, name: str) -> bool:
        return bool(self._call("DeleteVocabulary", pb.NameRef(name=name)).deleted)

    def create_dataset(self, name: str, vocabulary: str, validation_fraction: float,
                       pieces: Iterable[tuple[str, bool]]) -> DatasetInfo:
        """`pieces`: (text, ends a document) in order; streamed as they are produced."""
        def messages() -> Iterator[orchestrator_pb2.DatasetUpload]:
            yield pb.DatasetUpload(name=name, vocabulary=vocabulary, validation_fraction=validation_fraction)
            for text, end in pieces:
                yield pb.DatasetUpload(text=text, end_of_document=end)
        return _dataset(self._call("CreateDataset", messages()))

    def get_dataset(self, name: str) -> DatasetInfo:
        return _dataset(self._call("GetDataset", pb.NameRef(name=name)))

    def explore_dataset(self, name: str, sample_tokens: int) -> DatasetSample:
        r = self._call("ExploreDataset", pb.ExploreDatasetRequest(name=name, sample_tokens=sample_tokens))
        return DatasetSample(info=_dataset(r.info), sample=r.sample)

    def list_datasets(self) -> list[DatasetInfo]:
        return [_dataset(d) for d in self._call("ListDatasets", pb.ListRequest()).datasets]

    def delete_dataset(self, name: str) -> bool:
        return bool(self._call("DeleteDataset", pb.NameRef(name=name)).deleted)

    def split_dataset(self, name: str, validation_fraction: float) -> DatasetInfo:
        return _dataset(self._call("SplitDataset", pb.SplitDatasetRequest(
            name=name, validation_fraction=validation_fraction)))

    # -- fleet, checkpoints, health --
    def list_pnodes(self, timeout: float | None = None) -> list[PNodeInfo]:
        return [_pnode(p) for p in self._call("ListPNodes", pb.ListRequest(), timeout).pnodes]

    def trust_pnode(self, pnode_id: str, trusted: bool) -> PNodeInfo:
        return _pnode(self._call("TrustPNode", pb.TrustPNodeRequest(pnode=pnode_id, trusted=trusted)))

    def release_pnode(self, pnode_id: str) -> PNodeInfo:
        return _pnode(self._call("ReleasePNode", node_pb2.PNodeRef(id=pnode_id)))

    def list_relays(self) -> list[RelayInfo]:
        return [RelayInfo(r.id, r.address, r.state, r.attached, r.bytes_forwarded, r.last_seen, tuple(r.pnodes),
                          r.hop_bytes)
                for r in self._call("ListRelays", pb.ListRequest()).relays]

    def validation_events(self, session: str, network: str, limit: int) -> list[ValidationEventInfo]:
        r = self._call("ListValidationEvents", pb.ListValidationEventsRequest(session=session, network=network,
                                                                              limit=limit))
        return [_validation_event(e) for e in r.events]

    def list_checkpoints(self, session_id: str) -> list[CheckpointInfo]:
        return [_checkpoint(m) for m in self._call("ListCheckpoints", pb.SessionRef(id=session_id)).checkpoints]

    def export_checkpoint(self, session_id: str, session_step: int | None) -> Iterator[bytes]:
        request = pb.ExportCheckpointRequest(session=session_id, session_step=session_step or 0,
                                             has_step=session_step is not None)
        return self._stream("ExportCheckpoint", request, lambda c: c.data, self.timeout)

    def create_token(self, name: str, role: str, expires_in: float | None) -> str:
        return str(self._call("CreateToken", pb.CreateTokenRequest(name=name, role=role,
                                                                    expires_in_seconds=expires_in or 0)).token)

    def list_tokens(self) -> list[TokenInfo]:
        return [TokenInfo(t.name, t.role, t.created_at, t.expires_at)
                for t in self._call("ListTokens", pb.ListRequest()).tokens]

    def revoke_token(self, name: str) -> bool:
        return bool(self._call("RevokeToken", pb.NameRef(name=name)).deleted)

    def health(self, timeout: float | None = None) -> Health:
        r = self._call("Health", common_pb2.HealthRequest(), timeout)
        return Health(status=r.status, protocol_version=_version(r.version), software_version=r.software_version)
