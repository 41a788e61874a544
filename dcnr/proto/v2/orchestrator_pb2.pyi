from dcnr.proto.v2 import common_pb2 as _common_pb2
from dcnr.proto.v2 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckpointInfo(_message.Message):
    __slots__ = ("session", "network", "step", "session_step", "bytes", "created_at")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SESSION_STEP_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    session: str
    network: str
    step: int
    session_step: int
    bytes: int
    created_at: float
    def __init__(self, session: _Optional[str] = ..., network: _Optional[str] = ..., step: _Optional[int] = ..., session_step: _Optional[int] = ..., bytes: _Optional[int] = ..., created_at: _Optional[float] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointInfo]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[CheckpointInfo, _Mapping]]] = ...) -> None: ...

class ExportCheckpointRequest(_message.Message):
    __slots__ = ("session", "session_step", "has_step")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_STEP_FIELD_NUMBER: _ClassVar[int]
    HAS_STEP_FIELD_NUMBER: _ClassVar[int]
    session: str
    session_step: int
    has_step: bool
    def __init__(self, session: _Optional[str] = ..., session_step: _Optional[int] = ..., has_step: _Optional[bool] = ...) -> None: ...

class PNodeInfo(_message.Message):
    __slots__ = ("id", "address", "state", "hardware", "vnodes", "load", "last_seen", "version", "name", "trusted", "charges", "quarantined_until", "quarantine_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    state: str
    hardware: _node_pb2.Hardware
    vnodes: _containers.RepeatedScalarFieldContainer[str]
    load: float
    last_seen: float
    version: _common_pb2.ProtocolVersion
    name: str
    trusted: bool
    charges: int
    quarantined_until: float
    quarantine_reason: str
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., hardware: _Optional[_Union[_node_pb2.Hardware, _Mapping]] = ..., vnodes: _Optional[_Iterable[str]] = ..., load: _Optional[float] = ..., last_seen: _Optional[float] = ..., version: _Optional[_Union[_common_pb2.ProtocolVersion, _Mapping]] = ..., name: _Optional[str] = ..., trusted: _Optional[bool] = ..., charges: _Optional[int] = ..., quarantined_until: _Optional[float] = ..., quarantine_reason: _Optional[str] = ...) -> None: ...

class ListPNodesResponse(_message.Message):
    __slots__ = ("pnodes",)
    PNODES_FIELD_NUMBER: _ClassVar[int]
    pnodes: _containers.RepeatedCompositeFieldContainer[PNodeInfo]
    def __init__(self, pnodes: _Optional[_Iterable[_Union[PNodeInfo, _Mapping]]] = ...) -> None: ...

class RelayInfo(_message.Message):
    __slots__ = ("id", "address", "state", "attached", "bytes_forwarded", "last_seen", "pnodes", "hop_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    PNODES_FIELD_NUMBER: _ClassVar[int]
    HOP_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    state: str
    attached: int
    bytes_forwarded: int
    last_seen: float
    pnodes: _containers.RepeatedScalarFieldContainer[str]
    hop_bytes: int
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., state: _Optional[str] = ..., attached: _Optional[int] = ..., bytes_forwarded: _Optional[int] = ..., last_seen: _Optional[float] = ..., pnodes: _Optional[_Iterable[str]] = ..., hop_bytes: _Optional[int] = ...) -> None: ...

class ListRelaysResponse(_message.Message):
    __slots__ = ("relays",)
    RELAYS_FIELD_NUMBER: _ClassVar[int]
    relays: _containers.RepeatedCompositeFieldContainer[RelayInfo]
    def __init__(self, relays: _Optional[_Iterable[_Union[RelayInfo, _Mapping]]] = ...) -> None: ...

class TrustPNodeRequest(_message.Message):
    __slots__ = ("pnode", "trusted")
    PNODE_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    pnode: str
    trusted: bool
    def __init__(self, pnode: _Optional[str] = ..., trusted: _Optional[bool] = ...) -> None: ...

class ListValidationEventsRequest(_message.Message):
    __slots__ = ("session", "network", "limit")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    session: str
    network: str
    limit: int
    def __init__(self, session: _Optional[str] = ..., network: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ValidationEventInfo(_message.Message):
    __slots__ = ("seq", "at", "network", "session", "step", "unit", "accused", "verifier", "referee", "verdict", "detail")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    ACCUSED_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    REFEREE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: float
    network: str
    session: str
    step: int
    unit: str
    accused: str
    verifier: str
    referee: str
    verdict: str
    detail: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[float] = ..., network: _Optional[str] = ..., session: _Optional[str] = ..., step: _Optional[int] = ..., unit: _Optional[str] = ..., accused: _Optional[str] = ..., verifier: _Optional[str] = ..., referee: _Optional[str] = ..., verdict: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListValidationEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ValidationEventInfo]
    def __init__(self, events: _Optional[_Iterable[_Union[ValidationEventInfo, _Mapping]]] = ...) -> None: ...

class NetworkRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class NameRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SessionRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "role", "expires_in_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    expires_in_seconds: float
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., expires_in_seconds: _Optional[float] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("name", "role", "created_at", "expires_at", "token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    created_at: float
    expires_at: float
    token: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., token: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("yaml", "name", "source")
    YAML_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    name: str
    source: str
    def __init__(self, yaml: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class UpdateNetworkRequest(_message.Message):
    __slots__ = ("name", "yaml", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    yaml: str
    source: str
    def __init__(self, name: _Optional[str] = ..., yaml: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class NetworkInfo(_message.Message):
    __slots__ = ("name", "yaml", "vnodes", "parameters", "step", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    yaml: str
    vnodes: int
    parameters: int
    step: int
    created_at: str
    def __init__(self, name: _Optional[str] = ..., yaml: _Optional[str] = ..., vnodes: _Optional[int] = ..., parameters: _Optional[int] = ..., step: _Optional[int] = ..., created_at: _Optional[str] = ...) -> None: ...

class ListNetworksResponse(_message.Message):
    __slots__ = ("networks",)
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[NetworkInfo]
    def __init__(self, networks: _Optional[_Iterable[_Union[NetworkInfo, _Mapping]]] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("network", "inputs", "outputs")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    network: str
    inputs: _containers.RepeatedCompositeFieldContainer[NamedValue]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, network: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[NamedValue, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class NamedValue(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: _common_pb2.Value
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("outputs",)
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[NamedValue]
    def __init__(self, outputs: _Optional[_Iterable[_Union[NamedValue, _Mapping]]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("network", "inputs", "micro_batches")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    network: str
    inputs: _containers.RepeatedCompositeFieldContainer[NamedValue]
    micro_batches: int
    def __init__(self, network: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[NamedValue, _Mapping]]] = ..., micro_batches: _Optional[int] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("costs", "step", "skipped")
    class CostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    COSTS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    costs: _containers.ScalarMap[str, float]
    step: int
    skipped: bool
    def __init__(self, costs: _Optional[_Mapping[str, float]] = ..., step: _Optional[int] = ..., skipped: _Optional[bool] = ...) -> None: ...

class ValidateRequest(_message.Message):
    __slots__ = ("network", "dataset", "batches", "batch_size", "seed")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    network: str
    dataset: str
    batches: int
    batch_size: int
    seed: int
    def __init__(self, network: _Optional[str] = ..., dataset: _Optional[str] = ..., batches: _Optional[int] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ValidateResponse(_message.Message):
    __slots__ = ("costs",)
    class CostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    COSTS_FIELD_NUMBER: _ClassVar[int]
    costs: _containers.ScalarMap[str, float]
    def __init__(self, costs: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("network", "prompt", "vocabulary", "max_new_tokens", "temperature", "top_k", "seed")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    network: str
    prompt: str
    vocabulary: str
    max_new_tokens: int
    temperature: float
    top_k: int
    seed: int
    def __init__(self, network: _Optional[str] = ..., prompt: _Optional[str] = ..., vocabulary: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ChatChunk(_message.Message):
    __slots__ = ("text", "token", "done")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    text: str
    token: int
    done: bool
    def __init__(self, text: _Optional[str] = ..., token: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class CreateTrainSessionRequest(_message.Message):
    __slots__ = ("network", "dataset", "steps", "batch_size", "micro_batches", "seed", "checkpoint_every", "validation")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    network: str
    dataset: str
    steps: int
    batch_size: int
    micro_batches: int
    seed: int
    checkpoint_every: int
    validation: str
    def __init__(self, network: _Optional[str] = ..., dataset: _Optional[str] = ..., steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., micro_batches: _Optional[int] = ..., seed: _Optional[int] = ..., checkpoint_every: _Optional[int] = ..., validation: _Optional[str] = ...) -> None: ...

class TrainSessionInfo(_message.Message):
    __slots__ = ("id", "network", "dataset", "state", "step", "steps", "batch_size", "micro_batches", "seed", "error", "validation")
    ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    network: str
    dataset: str
    state: str
    step: int
    steps: int
    batch_size: int
    micro_batches: int
    seed: int
    error: str
    validation: str
    def __init__(self, id: _Optional[str] = ..., network: _Optional[str] = ..., dataset: _Optional[str] = ..., state: _Optional[str] = ..., step: _Optional[int] = ..., steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., micro_batches: _Optional[int] = ..., seed: _Optional[int] = ..., error: _Optional[str] = ..., validation: _Optional[str] = ...) -> None: ...

class ListTrainSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[TrainSessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[TrainSessionInfo, _Mapping]]] = ...) -> None: ...

class StepEvent(_message.Message):
    __slots__ = ("session", "step", "loss", "tokens_per_second", "learning_rates", "duration_seconds", "state", "steps", "error", "held_out_loss", "has_held_out_loss", "at")
    class LearningRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SESSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_LOSS_FIELD_NUMBER: _ClassVar[int]
    HAS_HELD_OUT_LOSS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    session: str
    step: int
    loss: float
    tokens_per_second: float
    learning_rates: _containers.ScalarMap[str, float]
    duration_seconds: float
    state: str
    steps: int
    error: str
    held_out_loss: float
    has_held_out_loss: bool
    at: float
    def __init__(self, session: _Optional[str] = ..., step: _Optional[int] = ..., loss: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., learning_rates: _Optional[_Mapping[str, float]] = ..., duration_seconds: _Optional[float] = ..., state: _Optional[str] = ..., steps: _Optional[int] = ..., error: _Optional[str] = ..., held_out_loss: _Optional[float] = ..., has_held_out_loss: _Optional[bool] = ..., at: _Optional[float] = ...) -> None: ...

class ListenTrainSessionRequest(_message.Message):
    __slots__ = ("id", "from_history", "from_step")
    ID_FIELD_NUMBER: _ClassVar[int]
    FROM_HISTORY_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    id: str
    from_history: bool
    from_step: int
    def __init__(self, id: _Optional[str] = ..., from_history: _Optional[bool] = ..., from_step: _Optional[int] = ...) -> None: ...

class TrainSessionHistoryRequest(_message.Message):
    __slots__ = ("id", "from_step", "limit")
    ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    from_step: int
    limit: int
    def __init__(self, id: _Optional[str] = ..., from_step: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class TrainSessionHistory(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StepEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[StepEvent, _Mapping]]] = ...) -> None: ...

class CreateVocabularyRequest(_message.Message):
    __slots__ = ("name", "vocab_size", "texts", "tokenizer_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocab_size: int
    texts: _containers.RepeatedScalarFieldContainer[str]
    tokenizer_json: str
    def __init__(self, name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., texts: _Optional[_Iterable[str]] = ..., tokenizer_json: _Optional[str] = ...) -> None: ...

class VocabularyInfo(_message.Message):
    __slots__ = ("name", "vocab_size", "tokenizer_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocab_size: int
    tokenizer_json: str
    def __init__(self, name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., tokenizer_json: _Optional[str] = ...) -> None: ...

class ListVocabulariesResponse(_message.Message):
    __slots__ = ("vocabularies",)
    VOCABULARIES_FIELD_NUMBER: _ClassVar[int]
    vocabularies: _containers.RepeatedCompositeFieldContainer[VocabularyInfo]
    def __init__(self, vocabularies: _Optional[_Iterable[_Union[VocabularyInfo, _Mapping]]] = ...) -> None: ...

class DatasetUpload(_message.Message):
    __slots__ = ("name", "vocabulary", "text", "validation_fraction", "end_of_document")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    END_OF_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocabulary: str
    text: str
    validation_fraction: float
    end_of_document: bool
    def __init__(self, name: _Optional[str] = ..., vocabulary: _Optional[str] = ..., text: _Optional[str] = ..., validation_fraction: _Optional[float] = ..., end_of_document: _Optional[bool] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "vocabulary", "tokens", "train_tokens", "validation_tokens", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocabulary: str
    tokens: int
    train_tokens: int
    validation_tokens: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., vocabulary: _Optional[str] = ..., tokens: _Optional[int] = ..., train_tokens: _Optional[int] = ..., validation_tokens: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class ExploreDatasetRequest(_message.Message):
    __slots__ = ("name", "sample_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    sample_tokens: int
    def __init__(self, name: _Optional[str] = ..., sample_tokens: _Optional[int] = ...) -> None: ...

class ExploreDatasetResponse(_message.Message):
    __slots__ = ("info", "sample")
    INFO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    info: DatasetInfo
    sample: str
    def __init__(self, info: _Optional[_Union[DatasetInfo, _Mapping]] = ..., sample: _Optional[str] = ...) -> None: ...

class SplitDatasetRequest(_message.Message):
    __slots__ = ("name", "validation_fraction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    validation_fraction: float
    def __init__(self, name: _Optional[str] = ..., validation_fraction: _Optional[float] = ...) -> None: ...

class InspectNetworkResponse(_message.Message):
    __slots__ = ("network", "placements")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    network: NetworkInfo
    placements: _containers.RepeatedCompositeFieldContainer[Placement]
    def __init__(self, network: _Optional[_Union[NetworkInfo, _Mapping]] = ..., placements: _Optional[_Iterable[_Union[Placement, _Mapping]]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("vnode", "pnode", "address")
    VNODE_FIELD_NUMBER: _ClassVar[int]
    PNODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    vnode: str
    pnode: str
    address: str
    def __init__(self, vnode: _Optional[str] = ..., pnode: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class ExportNetworkRequest(_message.Message):
    __slots__ = ("name", "step", "live")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: int
    live: bool
    def __init__(self, name: _Optional[str] = ..., step: _Optional[int] = ..., live: _Optional[bool] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data", "name")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    name: str
    def __init__(self, data: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class CloneNetworkRequest(_message.Message):
    __slots__ = ("source", "name")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    source: str
    name: str
    def __init__(self, source: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...
