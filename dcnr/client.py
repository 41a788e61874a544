"""`dcnr.Client`: the typed Python API of a running orchestrator.

One method per `OrchestratorService` call, with Python values in and out (the
dataclasses of `dcnr.transport.control`, torch tensors, iterators for streams), and
the few loops every caller needs written once: uploading a dataset in bounded pieces
with progress, training and uploading a vocabulary, and downloading an export to a
file atomically. The CLI, the demo, the tests and the benchmarks all go through it.

A failed call raises the `dcnr.errors` class of its cause: `NotFound` for an unknown
name, `NetworkError` (one problem per line) for a bad definition, `Unavailable` when
the orchestrator cannot be reached, and so on.

The orchestrator's address, the CA certificate to trust and a token come from a client
configuration file (`dcnr.security.config`: `config=`, else `$DCNR_CONFIG`, else
`~/.config/dcnr/config.yaml`); `dcnr orchestrator --state-dir D` writes `D/admin.yaml`.

    with dcnr.Client(config="dcnr-state/admin.yaml") as client:
        client.train_vocabulary("code", [Path("src")], vocab_size=4096)
        client.create_dataset("code-ds", "code", [Path("src")])
        client.create_network(Path("examples/networks/tiny_lm.yml"), name="lm")
        session = client.create_session("lm", "code-ds", steps=100, start=True)
        for event in client.listen_session(session.id):
            print(event.step, event.loss)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from dcnr.errors import DcnrError, InvalidArgument
from dcnr.security import config as client_config
from dcnr.storage.files import write_atomic
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
from dcnr.transport.grpc.control_client import GrpcControl

__all__ = ["ChatChunk", "CheckpointInfo", "Client", "DatasetInfo", "DatasetSample", "Hardware", "Health",
           "NetworkInfo", "NetworkPlacement", "PNodeInfo", "Placement", "RelayInfo", "SessionInfo", "StepEvent",
           "TokenInfo", "TrainResult", "ValidationEventInfo", "VocabularyInfo", "default_address", "text_files"]

DEFAULT_ADDRESS = "127.0.0.1:50052"
ADDRESS_ENV = "DCNR_ORCHESTRATOR"
TOKEN_ENV = "DCNR_TOKEN"
UPLOAD_PIECE = 1 << 20  # characters of text per upload message (a document may take several)
FILE_CHUNK = 1 << 20  # bytes per message when uploading a file
Progress = Callable[[int], None]  # called with the number of bytes just sent or received


def default_address() -> str:
    """`$DCNR_ORCHESTRATOR`, or 127.0.0.1:50052."""
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def text_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files in the given order; a directory stands for every file under it, sorted."""
    paths = list(paths)
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise InvalidArgument(f"{p}: no such file or directory")
    if not found:
        raise InvalidArgument("no files in " + (", ".join(map(str, paths)) or "an empty list of paths"))
    return found


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _definition(definition: str | Path) -> tuple[str, str]:
    """(YAML text, source for messages) of a file or of YAML given as text."""
    if isinstance(definition, Path):
        try:
            return definition.read_text(encoding="utf-8"), str(definition)
        except OSError as exc:
            raise InvalidArgument(f"{definition}: {exc.strerror or exc}") from None
    return definition, ""


class Client:
    """A TLS connection to one orchestrator. Its address is `address`, else the configuration file's,
    else `$DCNR_ORCHESTRATOR` or 127.0.0.1:50052; the CA certificate and the token are the configuration
    file's unless given (`token` also from `$DCNR_TOKEN`; none: anonymous). Calls wait at most `timeout`
    seconds (None: no limit); streams that follow long work (`listen_session`) take their own. Use it
    as a context manager, or call `close`."""

    def __init__(self, address: str | None = None, timeout: float | None = 600.0,
                 max_message_bytes: int = 256 * 2**20, config: str | Path | None = None,
                 ca_certificate: str | None = None, token: str | None = None) -> None:
        path = client_config.find(config)
        found = client_config.ClientConfig.load(path) if path is not None else None
        self.address = address or (found.orchestrator if found else "") or default_address()
        ca = ca_certificate or (found.ca_certificate if found else "")
        if not ca:
            raise InvalidArgument("no CA certificate to trust the orchestrator with: pass --config FILE (`dcnr "
                                  f"orchestrator` writes STATE_DIR/admin.yaml), set ${client_config.CONFIG_ENV}, "
                                  f"or write {client_config.default_path()} (orchestrator, ca_certificate, token)")
        token = token if token is not None else (os.environ.get(TOKEN_ENV) or (found.token if found else ""))
        self.timeout = timeout
        self._rpc = GrpcControl(self.address, ca.encode(), token, timeout, max_message_bytes)

    def close(self) -> None:
        """Close the channel; the client cannot be used afterwards."""
        self._rpc.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- networks -----------------------------------------------------------------------------------
    def create_network(self, definition: str | Path, name: str = "") -> NetworkInfo:
        """Submit a network: a YAML file (`Path`) or YAML text. `name` overrides the YAML's name.
        A bad definition raises `NetworkError` with every problem, one per line, naming the file."""
        text, source = _definition(definition)
        return self._rpc.create_network(text, name, source)

    def update_network(self, name: str, definition: str | Path) -> NetworkInfo:
        """Replace a network's definition; its VNodes start again from initial parameters."""
        text, source = _definition(definition)
        return self._rpc.update_network(name, text, source)

    def delete_network(self, name: str) -> bool:
        """Delete a network and drop its VNodes from the PNodes."""
        return self._rpc.delete_network(name)

    def get_network(self, name: str) -> NetworkInfo:
        return self._rpc.get_network(name)

    def list_networks(self) -> list[NetworkInfo]:
        return self._rpc.list_networks()

    def inspect_network(self, name: str) -> NetworkPlacement:
        """A network and where each of its VNodes runs."""
        return self._rpc.inspect_network(name)

    def export_network(self, name: str, path: str | Path, progress: Progress | None = None, live: bool = False) -> int:
        """Write every parameter, the optimizer state, the definition and the step as one safetensors
        file at `path` (whole or not at all); returns its size in bytes. A network trained under validation
        is exported as its newest verified checkpoint unless `live` (its metadata says which step, and
        whether it is verified)."""
        return write_atomic(path, _counted(self._rpc.export_network(name, live), progress))

    def import_network(self, path: str | Path, name: str = "", progress: Progress | None = None) -> NetworkInfo:
        """Create a network from a file written by `export_network` or `export_checkpoint`, streamed in
        pieces; `name` overrides the exported name."""
        path = Path(path)
        if not path.is_file():
            raise InvalidArgument(f"{path}: no such file")

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while data := f.read(FILE_CHUNK):
                    if progress is not None:
                        progress(len(data))
                    yield data
        return self._rpc.import_network(chunks(), name)

    def clone_network(self, source: str, name: str) -> NetworkInfo:
        """Copy a network with its current parameters and optimizer state."""
        return self._rpc.clone_network(source, name)

    # -- execution ----------------------------------------------------------------------------------
    def forward(self, network: str, inputs: Mapping[str, torch.Tensor | list[str]],
                outputs: Iterable[str] = ()) -> dict[str, Any]:
        """Run the network on `inputs` (input name -> tensor with a batch axis first, or a list of
        strings for a tokenizer input); returns the named outputs (default: every output)."""
        return self._rpc.forward(network, inputs, list(outputs))

    def train_step(self, network: str, inputs: Mapping[str, torch.Tensor], micro_batches: int = 1) -> TrainResult:
        """One training step on `inputs` (every network input, cost targets included)."""
        return self._rpc.train_step(network, inputs, micro_batches)

    def validate(self, network: str, dataset: str, batches: int = 4, batch_size: int = 8,
                 seed: int = 0) -> dict[str, float]:
        """Mean costs over `batches` held-out batches of the dataset's validation split."""
        return self._rpc.validate(network, dataset, batches, batch_size, seed)

    def chat(self, network: str, prompt: str, vocabulary: str = "", max_new_tokens: int = 64,
             temperature: float = 0.8, top_k: int = 40, seed: int = 0) -> Iterator[ChatChunk]:
        """Generate a continuation of `prompt`, token by token, as it is produced. `vocabulary`
        defaults to the one the network's last session trained with; temperature 0 is greedy;
        top_k 0 samples from every token."""
        return self._rpc.chat(network, vocabulary, prompt, max_new_tokens, temperature, top_k, seed)

    # -- training sessions --------------------------------------------------------------------------
    def create_session(self, network: str, dataset: str, steps: int, batch_size: int = 8, micro_batches: int = 1,
                       seed: int = 0, checkpoint_every: int = 0, start: bool = False,
                       validation: str = "") -> SessionInfo:
        """Create a training session (and start it with `start`). It checkpoints when it starts,
        every `checkpoint_every` steps (0: never in between), when suspended and when it completes.
        `validation` is how much of its work verifiers re-execute: `off`, `sample:P` (each work unit with
        probability P) or `full`; "" takes the network's default."""
        if steps < 1 or batch_size < 1 or micro_batches < 1 or seed < 0 or checkpoint_every < 0:
            raise InvalidArgument("steps, batch_size and micro_batches must be positive, seed and "
                                  "checkpoint_every non-negative")
        info = self._rpc.create_session(network, dataset, steps, batch_size, micro_batches, seed, checkpoint_every,
                                        validation)
        return self._rpc.start_session(info.id) if start else info

    def start_session(self, session_id: str) -> SessionInfo:
        """Start a created session, or resume a suspended one from its checkpoint."""
        return self._rpc.start_session(session_id)

    def suspend_session(self, session_id: str) -> SessionInfo:
        """Stop a running session after its current step, with a checkpoint."""
        return self._rpc.suspend_session(session_id)

    def list_sessions(self) -> list[SessionInfo]:
        return self._rpc.list_sessions()

    def delete_session(self, session_id: str) -> bool:
        """Stop and forget a session (the network keeps what it learned)."""
        return self._rpc.delete_session(session_id)

    def listen_session(self, session_id: str, timeout: float | None = None, from_step: int | None = None
                       ) -> Iterator[StepEvent]:
        """A session's events as they happen, until it completes or fails (or `timeout` seconds pass). With
        `from_step`, its kept step events from that step on come first (also those of steps trained before
        the orchestrator restarted); without, those since the orchestrator started."""
        if from_step is not None and from_step < 0:
            raise InvalidArgument(f"from_step must not be negative, got {from_step}")
        return self._rpc.listen_session(session_id, timeout, from_step)

    def session_history(self, session_id: str, from_step: int = 0, limit: int = 0) -> list[StepEvent]:
        """A session's kept step events from step `from_step` on, in step order (at most `limit`; 0: all): one
        per step of its trajectory, kept across orchestrator restarts until the session is deleted."""
        if from_step < 0 or limit < 0:
            raise InvalidArgument("from_step and limit must not be negative")
        return self._rpc.session_history(session_id, from_step, limit)

    # -- vocabularies -------------------------------------------------------------------------------
    def upload_vocabulary(self, name: str, tokenizer_json: str) -> VocabularyInfo:
        """Store a vocabulary trained elsewhere (the JSON of a `tokenizers.Tokenizer`)."""
        return self._rpc.create_vocabulary(name, tokenizer_json)

    def train_vocabulary(self, name: str, sources: Iterable[str | Path], vocab_size: int = 4096) -> VocabularyInfo:
        """Train a byte-level BPE vocabulary here, on `sources` (texts, or `Path`s of files and
        directories), and store it on the orchestrator."""
        from dcnr.data.vocab import train_vocabulary

        texts = (text for text, _ in _documents(sources))
        return self.upload_vocabulary(name, train_vocabulary(texts, vocab_size).to_str())

    def get_vocabulary(self, name: str) -> VocabularyInfo:
        """A vocabulary with its tokenizer JSON."""
        return self._rpc.get_vocabulary(name)

    def list_vocabularies(self) -> list[VocabularyInfo]:
        return self._rpc.list_vocabularies()

    def delete_vocabulary(self, name: str) -> bool:
        """Delete a vocabulary no dataset uses."""
        return self._rpc.delete_vocabulary(name)

    # -- datasets -----------------------------------------------------------------------------------
    def create_dataset(self, name: str, vocabulary: str, sources: Iterable[str | Path],
                       validation_fraction: float = 0.05, progress: Progress | None = None) -> DatasetInfo:
        """Stream documents to the orchestrator, which tokenizes them with `vocabulary` as they arrive.

        `sources` are documents as text, or `Path`s: a file is one document, a directory every file
        under it (a missing path fails the call before any file is read, and nothing is stored). Each
        document travels in pieces of at most `UPLOAD_PIECE` characters and files are read one at a
        time, so memory stays bounded whatever the corpus. `progress(n)` is called after each document
        with its size in bytes."""
        failed: list[Exception] = []

        def pieces() -> Iterator[tuple[str, bool]]:
            try:
                for text, size in _documents(sources):
                    count = max(1, -(-len(text) // UPLOAD_PIECE))
                    for i in range(count):
                        yield text[i * UPLOAD_PIECE:(i + 1) * UPLOAD_PIECE], i == count - 1
                    if progress is not None:
                        progress(size)
            except Exception as exc:  # gRPC would only cancel the call: the caller gets the cause
                failed.append(exc)
                raise
        try:
            return self._rpc.create_dataset(name, vocabulary, validation_fraction, pieces())
        except DcnrError:
            if failed:
                raise failed[0] from None
            raise

    def get_dataset(self, name: str) -> DatasetInfo:
        return self._rpc.get_dataset(name)

    def explore_dataset(self, name: str, sample_tokens: int = 64) -> DatasetSample:
        """A dataset's sizes and the decoded text of its first `sample_tokens` tokens."""
        return self._rpc.explore_dataset(name, sample_tokens)

    def list_datasets(self) -> list[DatasetInfo]:
        return self._rpc.list_datasets()

    def delete_dataset(self, name: str) -> bool:
        """Delete a dataset no running session reads."""
        return self._rpc.delete_dataset(name)

    def split_dataset(self, name: str, validation_fraction: float) -> DatasetInfo:
        """Set the share of a dataset held out for validation."""
        return self._rpc.split_dataset(name, validation_fraction)

    # -- fleet, checkpoints, health -----------------------------------------------------------------
    def list_pnodes(self, timeout: float | None = None) -> list[PNodeInfo]:
        """Every PNode the orchestrator knows, alive or dead, with the VNodes placed on it."""
        return self._rpc.list_pnodes(timeout)

    def trust_pnode(self, pnode_id: str, trusted: bool = True) -> PNodeInfo:
        """Mark a PNode as trusted (its work is then sampled at a tenth of the rate), or no longer with
        `trusted=False` (operators only). The id must have registered once."""
        return self._rpc.trust_pnode(pnode_id, trusted)

    def release_pnode(self, pnode_id: str) -> PNodeInfo:
        """End a PNode's quarantine and clear its charges, so it gets work again (operators only);
        `Conflict` when it is not quarantined."""
        return self._rpc.release_pnode(pnode_id)

    def list_relays(self) -> list[RelayInfo]:
        """The relays serving PNodes behind NAT (the orchestrator's own first), with what they carry."""
        return self._rpc.list_relays()

    def validation_events(self, session: str = "", network: str = "", limit: int = 1000) -> list[ValidationEventInfo]:
        """The newest `limit` entries of the validation log (of one session, one network, or all), oldest first."""
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        return self._rpc.validation_events(session, network, limit)

    def list_checkpoints(self, session_id: str) -> list[CheckpointInfo]:
        """A session's checkpoints in storage, oldest first."""
        return self._rpc.list_checkpoints(session_id)

    def export_checkpoint(self, session_id: str, path: str | Path, session_step: int | None = None,
                          progress: Progress | None = None) -> int:
        """Write one checkpoint of a session (default: its latest) as a self-describing safetensors
        artifact at `path` (whole or not at all); returns its size in bytes."""
        return write_atomic(path, _counted(self._rpc.export_checkpoint(session_id, session_step), progress))

    def health(self, timeout: float | None = None) -> Health:
        """The orchestrator's status and versions; raises `Unavailable` when it cannot be reached."""
        return self._rpc.health(timeout)

    # -- access (operators) -----------------------------------------------------------------------------
    def create_token(self, name: str, role: str, expires_in: float | None = None) -> str:
        """A new token for `role` (operator or researcher), valid `expires_in` seconds (None: until revoked).
        The secret is returned only now: the orchestrator keeps its hash."""
        return self._rpc.create_token(name, role, expires_in)

    def list_tokens(self) -> list[TokenInfo]:
        return self._rpc.list_tokens()

    def revoke_token(self, name: str) -> bool:
        """Revoke a token at once; False if there was none of that name."""
        return self._rpc.revoke_token(name)


def _documents(sources: Iterable[str | Path]) -> Iterator[tuple[str, int]]:
    """(text, its size in bytes) of each document: texts as given, files read one at a time.
    Every path is checked first, so a typo fails before anything is read or sent."""
    items: list[str | Path] = []
    for source in sources:
        items.extend(text_files([source]) if isinstance(source, Path) else [source])
    for item in items:
        if isinstance(item, Path):
            yield _read(item), item.stat().st_size
        else:
            yield item, len(item.encode("utf-8"))


def _counted(chunks: Iterable[bytes], progress: Progress | None) -> Iterator[bytes]:
    for chunk in chunks:
        if progress is not None:
            progress(len(chunk))
        yield chunk
