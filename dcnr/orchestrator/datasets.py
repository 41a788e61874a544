"""Requests about vocabularies and datasets that need more than the data store.

A vocabulary is either given (tokenizer JSON) or trained here on texts; a dataset that
feeds a running session cannot be deleted. Everything else goes straight to
`DataStore`. Knows nothing of gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dcnr.data.vocab import train_vocabulary
from dcnr.errors import Conflict, InvalidArgument
from dcnr.orchestrator.datastore import DataStore, check_name
from dcnr.orchestrator.store import StateStore

VOCAB_SIZE = 4096  # tokens of a vocabulary trained here, unless asked otherwise


def create_vocabulary(data: DataStore, name: str, tokenizer_json: str = "", texts: Sequence[str] = (),
                      vocab_size: int | None = None) -> dict[str, Any]:
    """Store `tokenizer_json` under `name`, or else a byte-level BPE vocabulary trained on `texts`."""
    check_name("vocabulary", name)
    if not tokenizer_json:
        if not texts:
            raise InvalidArgument("a vocabulary needs either tokenizer JSON or texts to train on")
        vocab_size = vocab_size or VOCAB_SIZE
        data.limits.check("max_vocab_size", vocab_size, f"vocabulary {name!r}: vocab_size {vocab_size}")
        total = 0
        for text in texts:  # counted before training starts
            total = data.limits.check("max_training_text_bytes", total + len(text.encode()),
                                      f"vocabulary {name!r}: the training text")
        tokenizer_json = train_vocabulary(texts, vocab_size).to_str()
    return data.create_vocabulary(name, tokenizer_json)


def delete_dataset(data: DataStore, store: StateStore, name: str) -> bool:
    """Delete a dataset; refused while a running session reads it."""
    data.get_dataset(name)
    users = [s.id for s in store.list_sessions() if s.dataset == name and s.state == "running"]
    if users:
        raise Conflict(f"dataset {name!r} feeds running session {users[0]}; suspend it first")
    return data.delete_dataset(name)
