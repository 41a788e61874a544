from dcnr.proto.v2 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProgressEvent(_message.Message):
    __slots__ = ("kind", "network", "run", "micro_batch", "vnode", "slot", "value", "error")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ProgressEvent.Kind]
        OUTPUT: _ClassVar[ProgressEvent.Kind]
        MICRO_BATCH_DONE: _ClassVar[ProgressEvent.Kind]
        FAILED: _ClassVar[ProgressEvent.Kind]
    KIND_UNSPECIFIED: ProgressEvent.Kind
    OUTPUT: ProgressEvent.Kind
    MICRO_BATCH_DONE: ProgressEvent.Kind
    FAILED: ProgressEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    kind: ProgressEvent.Kind
    network: str
    run: str
    micro_batch: int
    vnode: str
    slot: int
    value: _common_pb2.Value
    error: str
    def __init__(self, kind: _Optional[_Union[ProgressEvent.Kind, str]] = ..., network: _Optional[str] = ..., run: _Optional[str] = ..., micro_batch: _Optional[int] = ..., vnode: _Optional[str] = ..., slot: _Optional[int] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class ProgressReport(_message.Message):
    __slots__ = ("version", "pnode", "events")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PNODE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ProtocolVersion
    pnode: str
    events: _containers.RepeatedCompositeFieldContainer[ProgressEvent]
    def __init__(self, version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., pnode: _Optional[str] = ..., events: _Optional[_Iterable[_Union[ProgressEvent, _Mapping]]] = ...) -> None: ...

class ProgressAck(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("cpu_cores", "memory_bytes", "device", "memory_budget_bytes", "threads", "compute_class")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CLASS_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: int
    memory_bytes: int
    device: str
    memory_budget_bytes: int
    threads: int
    compute_class: str
    def __init__(self, cpu_cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., device: _Optional[str] = ..., memory_budget_bytes: _Optional[int] = ..., threads: _Optional[int] = ..., compute_class: _Optional[str] = ...) -> None: ...

class CertificateRequest(_message.Message):
    __slots__ = ("csr", "version", "role")
    CSR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    version: _common_pb2.ProtocolVersion
    role: str
    def __init__(self, csr: _Optional[bytes] = ..., version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., role: _Optional[str] = ...) -> None: ...

class CertificateResponse(_message.Message):
    __slots__ = ("id", "certificate", "peer_port")
    ID_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PEER_PORT_FIELD_NUMBER: _ClassVar[int]
    id: str
    certificate: bytes
    peer_port: int
    def __init__(self, id: _Optional[str] = ..., certificate: _Optional[bytes] = ..., peer_port: _Optional[int] = ...) -> None: ...

class RegisterPNodeRequest(_message.Message):
    __slots__ = ("id", "version", "address", "hardware", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: _common_pb2.ProtocolVersion
    address: str
    hardware: Hardware
    name: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., address: _Optional[str] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class RegisterPNodeResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "version", "unreachable", "detail")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    version: _common_pb2.ProtocolVersion
    unreachable: bool
    detail: str
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ..., version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., unreachable: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class AssignRelayRequest(_message.Message):
    __slots__ = ("id", "avoid")
    ID_FIELD_NUMBER: _ClassVar[int]
    AVOID_FIELD_NUMBER: _ClassVar[int]
    id: str
    avoid: str
    def __init__(self, id: _Optional[str] = ..., avoid: _Optional[str] = ...) -> None: ...

class AssignRelayResponse(_message.Message):
    __slots__ = ("relay", "address")
    RELAY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    relay: str
    address: str
    def __init__(self, relay: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class RegisterRelayRequest(_message.Message):
    __slots__ = ("id", "version", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: _common_pb2.ProtocolVersion
    address: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., address: _Optional[str] = ...) -> None: ...

class RelayHeartbeat(_message.Message):
    __slots__ = ("id", "attached", "bytes_forwarded", "hop_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    HOP_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    attached: int
    bytes_forwarded: int
    hop_bytes: int
    def __init__(self, id: _Optional[str] = ..., attached: _Optional[int] = ..., bytes_forwarded: _Optional[int] = ..., hop_bytes: _Optional[int] = ...) -> None: ...

class PNodeRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UnregisterPNodeResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("id", "load", "memory_used_bytes", "vnodes", "refused_tasks")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    REFUSED_TASKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    load: float
    memory_used_bytes: int
    vnodes: _containers.RepeatedScalarFieldContainer[str]
    refused_tasks: int
    def __init__(self, id: _Optional[str] = ..., load: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., vnodes: _Optional[_Iterable[str]] = ..., refused_tasks: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known", "certificate")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    known: bool
    certificate: bytes
    def __init__(self, known: _Optional[bool] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class PlaceNetworkRequest(_message.Message):
    __slots__ = ("version", "network", "yaml", "seed", "digest", "placement_version", "step", "assignments", "addresses", "vocabularies", "keys")
    class AssignmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AddressesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class VocabulariesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class KeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    VOCABULARIES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ProtocolVersion
    network: str
    yaml: str
    seed: int
    digest: str
    placement_version: int
    step: int
    assignments: _containers.ScalarMap[str, str]
    addresses: _containers.ScalarMap[str, str]
    vocabularies: _containers.ScalarMap[str, str]
    keys: _containers.ScalarMap[str, bytes]
    def __init__(self, version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., network: _Optional[str] = ..., yaml: _Optional[str] = ..., seed: _Optional[int] = ..., digest: _Optional[str] = ..., placement_version: _Optional[int] = ..., step: _Optional[int] = ..., assignments: _Optional[_Mapping[str, str]] = ..., addresses: _Optional[_Mapping[str, str]] = ..., vocabularies: _Optional[_Mapping[str, str]] = ..., keys: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class PlaceNetworkResponse(_message.Message):
    __slots__ = ("hosted",)
    HOSTED_FIELD_NUMBER: _ClassVar[int]
    hosted: int
    def __init__(self, hosted: _Optional[int] = ...) -> None: ...

class BeginRunRequest(_message.Message):
    __slots__ = ("version", "run")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ProtocolVersion
    run: _common_pb2.Run
    def __init__(self, version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., run: _Optional[_Union[_common_pb2.Run, _Mapping]] = ...) -> None: ...

class BeginRunResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HopRequest(_message.Message):
    __slots__ = ("network", "run", "micro_batch", "vnode", "slot", "value", "signature")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    network: str
    run: str
    micro_batch: int
    vnode: str
    slot: int
    value: _common_pb2.Value
    signature: bytes
    def __init__(self, network: _Optional[str] = ..., run: _Optional[str] = ..., micro_batch: _Optional[int] = ..., vnode: _Optional[str] = ..., slot: _Optional[int] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class HopAck(_message.Message):
    __slots__ = ("accepted", "duplicate")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    duplicate: bool
    def __init__(self, accepted: _Optional[bool] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GradientHop(_message.Message):
    __slots__ = ("network", "run", "micro_batch", "vnode", "edge", "gradient", "has_gradient", "signature")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    HAS_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    network: str
    run: str
    micro_batch: int
    vnode: str
    edge: int
    gradient: _common_pb2.Tensor
    has_gradient: bool
    signature: bytes
    def __init__(self, network: _Optional[str] = ..., run: _Optional[str] = ..., micro_batch: _Optional[int] = ..., vnode: _Optional[str] = ..., edge: _Optional[int] = ..., gradient: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., has_gradient: _Optional[bool] = ..., signature: _Optional[bytes] = ...) -> None: ...

class NetworkStepRequest(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: str
    def __init__(self, network: _Optional[str] = ...) -> None: ...

class CheckFiniteResponse(_message.Message):
    __slots__ = ("finite",)
    FINITE_FIELD_NUMBER: _ClassVar[int]
    finite: bool
    def __init__(self, finite: _Optional[bool] = ...) -> None: ...

class ApplyUpdateRequest(_message.Message):
    __slots__ = ("network", "step", "loss_scale", "apply")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_SCALE_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    network: str
    step: int
    loss_scale: float
    apply: bool
    def __init__(self, network: _Optional[str] = ..., step: _Optional[int] = ..., loss_scale: _Optional[float] = ..., apply: _Optional[bool] = ...) -> None: ...

class ApplyUpdateResponse(_message.Message):
    __slots__ = ("learning_rates", "commitments", "timing")
    class LearningRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LEARNING_RATES_FIELD_NUMBER: _ClassVar[int]
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    learning_rates: _containers.ScalarMap[str, float]
    commitments: _containers.RepeatedCompositeFieldContainer[Commitment]
    timing: StepTiming
    def __init__(self, learning_rates: _Optional[_Mapping[str, float]] = ..., commitments: _Optional[_Iterable[_Union[Commitment, _Mapping]]] = ..., timing: _Optional[_Union[StepTiming, _Mapping]] = ...) -> None: ...

class StepTiming(_message.Message):
    __slots__ = ("run", "names", "work", "sent", "received", "truncated")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    WORK_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    run: str
    names: _containers.RepeatedScalarFieldContainer[str]
    work: _containers.RepeatedCompositeFieldContainer[TimedWork]
    sent: _containers.RepeatedCompositeFieldContainer[TimedHop]
    received: _containers.RepeatedCompositeFieldContainer[TimedHop]
    truncated: bool
    def __init__(self, run: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., work: _Optional[_Iterable[_Union[TimedWork, _Mapping]]] = ..., sent: _Optional[_Iterable[_Union[TimedHop, _Mapping]]] = ..., received: _Optional[_Iterable[_Union[TimedHop, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class TimedWork(_message.Message):
    __slots__ = ("vnode", "op", "micro_batch", "start", "end")
    VNODE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    vnode: int
    op: int
    micro_batch: int
    start: float
    end: float
    def __init__(self, vnode: _Optional[int] = ..., op: _Optional[int] = ..., micro_batch: _Optional[int] = ..., start: _Optional[float] = ..., end: _Optional[float] = ...) -> None: ...

class TimedHop(_message.Message):
    __slots__ = ("vnode", "backward", "micro_batch", "index", "at", "bytes", "peer")
    VNODE_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    vnode: int
    backward: bool
    micro_batch: int
    index: int
    at: float
    bytes: int
    peer: int
    def __init__(self, vnode: _Optional[int] = ..., backward: _Optional[bool] = ..., micro_batch: _Optional[int] = ..., index: _Optional[int] = ..., at: _Optional[float] = ..., bytes: _Optional[int] = ..., peer: _Optional[int] = ...) -> None: ...

class Commitment(_message.Message):
    __slots__ = ("vnode", "state", "sent", "received", "grad_norm")
    class SentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ReceivedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ReceivedHop
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ReceivedHop, _Mapping]] = ...) -> None: ...
    VNODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    vnode: str
    state: str
    sent: _containers.ScalarMap[str, str]
    received: _containers.MessageMap[str, ReceivedHop]
    grad_norm: float
    def __init__(self, vnode: _Optional[str] = ..., state: _Optional[str] = ..., sent: _Optional[_Mapping[str, str]] = ..., received: _Optional[_Mapping[str, ReceivedHop]] = ..., grad_norm: _Optional[float] = ...) -> None: ...

class ReceivedHop(_message.Message):
    __slots__ = ("digest", "sender", "signature")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    sender: str
    signature: bytes
    def __init__(self, digest: _Optional[str] = ..., sender: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class EvidenceRequest(_message.Message):
    __slots__ = ("network", "run", "vnodes")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    network: str
    run: str
    vnodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, network: _Optional[str] = ..., run: _Optional[str] = ..., vnodes: _Optional[_Iterable[str]] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("states", "inputs", "gradients", "sent_inputs", "sent_gradients")
    STATES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    SENT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    SENT_GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[VNodeState]
    inputs: _containers.RepeatedCompositeFieldContainer[HopRequest]
    gradients: _containers.RepeatedCompositeFieldContainer[GradientHop]
    sent_inputs: _containers.RepeatedCompositeFieldContainer[HopRequest]
    sent_gradients: _containers.RepeatedCompositeFieldContainer[GradientHop]
    def __init__(self, states: _Optional[_Iterable[_Union[VNodeState, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[HopRequest, _Mapping]]] = ..., gradients: _Optional[_Iterable[_Union[GradientHop, _Mapping]]] = ..., sent_inputs: _Optional[_Iterable[_Union[HopRequest, _Mapping]]] = ..., sent_gradients: _Optional[_Iterable[_Union[GradientHop, _Mapping]]] = ...) -> None: ...

class VNodeState(_message.Message):
    __slots__ = ("vnode", "tensors")
    VNODE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    vnode: str
    tensors: _containers.RepeatedCompositeFieldContainer[_common_pb2.NamedTensor]
    def __init__(self, vnode: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[_common_pb2.NamedTensor, _Mapping]]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("version", "network", "yaml", "seed", "vocabularies", "vnodes", "run", "loss_scale", "apply", "evidence", "tolerance")
    class VocabulariesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VOCABULARIES_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    LOSS_SCALE_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.ProtocolVersion
    network: str
    yaml: str
    seed: int
    vocabularies: _containers.ScalarMap[str, str]
    vnodes: _containers.RepeatedScalarFieldContainer[str]
    run: _common_pb2.Run
    loss_scale: float
    apply: bool
    evidence: Evidence
    tolerance: float
    def __init__(self, version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., network: _Optional[str] = ..., yaml: _Optional[str] = ..., seed: _Optional[int] = ..., vocabularies: _Optional[_Mapping[str, str]] = ..., vnodes: _Optional[_Iterable[str]] = ..., run: _Optional[_Union[_common_pb2.Run, _Mapping]] = ..., loss_scale: _Optional[float] = ..., apply: _Optional[bool] = ..., evidence: _Optional[_Union[Evidence, _Mapping]] = ..., tolerance: _Optional[float] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("commitments",)
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    commitments: _containers.RepeatedCompositeFieldContainer[Commitment]
    def __init__(self, commitments: _Optional[_Iterable[_Union[Commitment, _Mapping]]] = ...) -> None: ...

class ResetToStepRequest(_message.Message):
    __slots__ = ("network", "step", "fence_run", "reinitialize")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FENCE_RUN_FIELD_NUMBER: _ClassVar[int]
    REINITIALIZE_FIELD_NUMBER: _ClassVar[int]
    network: str
    step: int
    fence_run: str
    reinitialize: bool
    def __init__(self, network: _Optional[str] = ..., step: _Optional[int] = ..., fence_run: _Optional[str] = ..., reinitialize: _Optional[bool] = ...) -> None: ...

class ResetToStepResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("network", "vnode", "tensors", "step", "digest")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    network: str
    vnode: str
    tensors: _containers.RepeatedCompositeFieldContainer[_common_pb2.NamedTensor]
    step: int
    digest: str
    def __init__(self, network: _Optional[str] = ..., vnode: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[_common_pb2.NamedTensor, _Mapping]]] = ..., step: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("loaded",)
    LOADED_FIELD_NUMBER: _ClassVar[int]
    loaded: bool
    def __init__(self, loaded: _Optional[bool] = ...) -> None: ...

class SaveRequest(_message.Message):
    __slots__ = ("network", "vnode", "to_storage")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    TO_STORAGE_FIELD_NUMBER: _ClassVar[int]
    network: str
    vnode: str
    to_storage: bool
    def __init__(self, network: _Optional[str] = ..., vnode: _Optional[str] = ..., to_storage: _Optional[bool] = ...) -> None: ...

class SaveResponse(_message.Message):
    __slots__ = ("tensors", "step", "digest", "size")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[_common_pb2.NamedTensor]
    step: int
    digest: str
    size: int
    def __init__(self, tensors: _Optional[_Iterable[_Union[_common_pb2.NamedTensor, _Mapping]]] = ..., step: _Optional[int] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ListLocalVNodesRequest(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: str
    def __init__(self, network: _Optional[str] = ...) -> None: ...

class LocalVNode(_message.Message):
    __slots__ = ("network", "vnode", "type", "step", "memory_bytes")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    network: str
    vnode: str
    type: str
    step: int
    memory_bytes: int
    def __init__(self, network: _Optional[str] = ..., vnode: _Optional[str] = ..., type: _Optional[str] = ..., step: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class ListLocalVNodesResponse(_message.Message):
    __slots__ = ("vnodes",)
    VNODES_FIELD_NUMBER: _ClassVar[int]
    vnodes: _containers.RepeatedCompositeFieldContainer[LocalVNode]
    def __init__(self, vnodes: _Optional[_Iterable[_Union[LocalVNode, _Mapping]]] = ...) -> None: ...

class DropLocalVNodeRequest(_message.Message):
    __slots__ = ("network", "vnode")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    network: str
    vnode: str
    def __init__(self, network: _Optional[str] = ..., vnode: _Optional[str] = ...) -> None: ...

class DropLocalVNodeResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class InspectLocalRequest(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: str
    def __init__(self, network: _Optional[str] = ...) -> None: ...

class InspectLocalResponse(_message.Message):
    __slots__ = ("vnodes",)
    VNODES_FIELD_NUMBER: _ClassVar[int]
    vnodes: _containers.RepeatedCompositeFieldContainer[LocalVNode]
    def __init__(self, vnodes: _Optional[_Iterable[_Union[LocalVNode, _Mapping]]] = ...) -> None: ...

class RelayFrame(_message.Message):
    __slots__ = ("id", "reply", "method", "target", "caller", "payload", "timeout", "code", "detail", "trailing")
    class TrailingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TRAILING_FIELD_NUMBER: _ClassVar[int]
    id: int
    reply: bool
    method: str
    target: str
    caller: bytes
    payload: bytes
    timeout: float
    code: int
    detail: str
    trailing: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., reply: _Optional[bool] = ..., method: _Optional[str] = ..., target: _Optional[str] = ..., caller: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., timeout: _Optional[float] = ..., code: _Optional[int] = ..., detail: _Optional[str] = ..., trailing: _Optional[_Mapping[str, str]] = ...) -> None: ...
