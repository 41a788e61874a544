"""What the control plane (`OrchestratorService`) answers, as plain Python values.

Frozen dataclasses, one per kind of answer, shared by `dcnr.Client`, every
implementation of the control channel (gRPC today) and the orchestrator's services that
produce them (networks, serving); none of them knows about protobuf. Field names follow
the protocol's messages, so `dataclasses.asdict` of one gives the JSON that
`dcnr ... --json` prints.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkInfo:
    """A network the orchestrator holds."""

    name: str
    yaml: str  # the definition, verbatim as submitted
    vnodes: int
    parameters: int
    step: int  # optimizer steps applied so far
    created_at: str  # ISO 8601


@dataclass(frozen=True)
class Placement:
    """Where one VNode runs."""

    vnode: str
    pnode: str
    address: str


@dataclass(frozen=True)
class NetworkPlacement:
    """A network and the PNode each of its VNodes is placed on (`InspectNetwork`)."""

    network: NetworkInfo
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class TrainResult:
    """One training step run through `TrainNetwork`."""

    costs: dict[str, float]  # cost name -> mean over the micro-batches
    step: int  # the network's step after this one
    skipped: bool  # fp16 overflow: the update was skipped everywhere


@dataclass(frozen=True)
class ChatChunk:
    """One generated token and the text it completes (empty while a UTF-8 sequence is incomplete)."""

    text: str
    token: int


@dataclass(frozen=True)
class SessionInfo:
    """A training session."""

    id: str
    network: str
    dataset: str
    state: str  # created | running | suspended | completed | failed
    step: int  # steps of this session done
    steps: int  # steps it runs in all
    batch_size: int
    micro_batches: int
    seed: int
    error: str  # why it failed, when it did
    validation: str = ""  # its validation policy (off | sample:P | full); "": the network's default


@dataclass(frozen=True)
class StepEvent:
    """What a session reports: a finished step, or a change of state."""

    session: str
    step: int
    steps: int
    loss: float | None  # None for an event that reports no step (a change of state)
    tokens_per_second: float
    learning_rates: dict[str, float]  # learning-rate metric name -> value
    duration_seconds: float
    state: str
    error: str
    held_out_loss: float | None = None  # the network evaluated on the session's dataset at this step, if it was
    at: float = 0.0  # unix time the step was recorded (0 for a change of state)


@dataclass(frozen=True)
class VocabularyInfo:
    """A byte-level BPE vocabulary the orchestrator stores."""

    name: str
    vocab_size: int
    tokenizer_json: str  # the `tokenizers` JSON; only `get_vocabulary` fills it in, listings leave it empty


@dataclass(frozen=True)
class DatasetInfo:
    """A tokenized dataset and its train/validation split."""

    name: str
    vocabulary: str
    tokens: int
    train_tokens: int
    validation_tokens: int
    sha256: str  # of the token array


@dataclass(frozen=True)
class DatasetSample:
    """A dataset with the decoded text of its first tokens (`ExploreDataset`)."""

    info: DatasetInfo
    sample: str


@dataclass(frozen=True)
class Hardware:
    """What a PNode reported about its machine when it registered."""

    cpu_cores: int
    memory_bytes: int
    device: str  # cpu | cuda | mps
    memory_budget_bytes: int  # memory it lends to hosted VNodes
    threads: int  # torch threads for compute


@dataclass(frozen=True)
class PNodeInfo:
    """A PNode in the orchestrator's registry."""

    id: str  # derived from its key
    address: str
    state: str  # alive | dead
    load: float
    last_seen: float  # unix time of its last heartbeat
    version: str  # protocol version, "major.minor.patch"
    hardware: Hardware
    vnodes: tuple[str, ...]  # "network/vnode" placed there
    name: str = ""  # the label its operator gave it
    trusted: bool = False  # an operator vouched for it: its work is sampled less
    charges: int = 0  # validations it failed since it was last released
    quarantined_until: float = 0.0  # unix time until which it gets no work; 0 when not quarantined
    quarantine_reason: str = ""  # why, while quarantined


@dataclass(frozen=True)
class RelayInfo:
    """A relay carrying PNodes that accept no connections (id "orchestrator": the orchestrator's own)."""

    id: str
    address: str  # host:port of its RelayService (":port" for the orchestrator's own)
    state: str  # alive | dead
    attached: int  # PNodes attached, as of its last heartbeat
    bytes_forwarded: int  # payload bytes carried since it started, both ways
    last_seen: float
    pnodes: tuple[str, ...]  # PNodes the orchestrator sent to it
    hop_bytes: int  # of `bytes_forwarded`, hops (activations and gradients)


@dataclass(frozen=True)
class ValidationEventInfo:
    """One entry of the validation log: a check of a PNode's work and its verdict, or an operator's change
    of a PNode's standing (verdicts: `dcnr.orchestrator.store.ValidationEvent`)."""

    seq: int  # its place in the log
    at: float  # unix time
    network: str
    session: str
    step: int
    unit: str  # the work unit checked
    accused: str  # PNode whose work was checked (or whose standing changed)
    verifier: str  # PNode that re-executed it
    referee: str  # PNode that settled a mismatch
    verdict: str  # pass | fail | false-accusation | unresolved | fault | released | trusted | untrusted
    detail: str


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint a training session wrote."""

    session: str
    network: str
    step: int  # the network's step
    session_step: int  # steps of the session done when it was written
    bytes: int
    created_at: float  # unix time


@dataclass(frozen=True)
class Health:
    """An orchestrator's answer to `Health`."""

    status: str  # "serving"
    protocol_version: str  # "major.minor.patch"
    software_version: str


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (its secret only in `create_token`'s answer, once)."""

    name: str
    role: str
    created_at: float
    expires_at: float  # 0: never
