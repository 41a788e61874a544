"""How much one request may ask of the orchestrator: the caps on what callers send it.

The orchestrator may face the internet, so nothing a caller sends may make it hold or build
more than a fixed amount. Each cap is checked before the memory it guards is spent: a stream
is counted while it is read, a count before anything is allocated for it. Going over a cap
is `ResourceExhausted`, with a message naming what was too large, the limit and the field
that sets it. Each default is sized, in its comment, against real use and one orchestrator
machine's memory; `dcnr orchestrator` options set the two an operator most likely changes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dcnr.errors import InvalidArgument, ResourceExhausted

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True, kw_only=True)
class Limits:
    # An imported network artifact (parameters, optimizer state, YAML), held whole (twice while it is
    # joined) until imported: about 170M parameters with their Adam moments in float32 (12 bytes each).
    max_artifact_bytes: int = 2 * GiB
    # A network definition's YAML: 20 times the largest example network.
    max_network_yaml_bytes: int = 1 * MiB
    # One document of a dataset, held whole while it is tokenized (`tokenizers` holds ~30 times its bytes).
    max_document_bytes: int = 16 * MiB
    # All the text of one dataset; its tokens take about twice as many bytes (int64, ~4 bytes of text each).
    max_dataset_bytes: int = 1 * GiB
    # Documents in one dataset (each adds an <eos> token even when empty).
    max_dataset_documents: int = 10_000_000
    # An uploaded vocabulary's tokenizer JSON: about twice that of the largest vocabularies in common use
    # (~17 MB for 256k tokens); PNodes are sent it too.
    max_vocabulary_bytes: int = 32 * MiB
    # Tokens of a vocabulary, uploaded or trained here: four times the largest in common use.
    max_vocab_size: int = 2**20
    # Text a vocabulary is trained on here (byte-level BPE holds every distinct word with its count).
    max_training_text_bytes: int = 64 * MiB
    # Micro-batches of one training step (the driver slices, sends and awaits each one apart).
    max_micro_batches: int = 1024
    # Rows of one batch: a training step's, a forward pass's, a session's or an evaluation's.
    max_batch_size: int = 65536
    # Batches one evaluation (ValidateNetwork) runs.
    max_validation_batches: int = 1024
    # Tokens one chat generates (each is a forward pass over the fleet).
    max_chat_tokens: int = 4096

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"limit {f.name} must be a positive integer, got {value!r}")

    def check(self, field: str, amount: int, what: str) -> int:
        """`amount` when it is within the limit `field`; otherwise `ResourceExhausted` naming `what`."""
        limit = getattr(self, field)
        assert isinstance(limit, int), f"{field} is not a limit"
        if amount > limit:
            unit = " bytes" if field.endswith("_bytes") else ""
            raise ResourceExhausted(f"{what} is over the limit of {limit}{unit} ({field})")
        return amount
