"""Where `tokenizer` and `detokenizer` nodes get their vocabulary, given to them per run.

A node names its vocabulary in its config (`vocab_path`, a tokenizer JSON file, or
`vocabulary`, an id stored by the orchestrator). Whoever builds the VNodes passes
`build_vnodes` a `Vocabularies` (a PNode's resolves stored ids through its orchestrator);
each VNode hands it to its node in the `Context`. The validated node itself never changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer

VocabularySource = Callable[[str], str]  # stored vocabulary id -> tokenizer JSON


class Vocabularies:
    """Loads the vocabularies text nodes name, each once (thread-safe).

    `stored` resolves vocabulary ids (a PNode asks its orchestrator); without it, a node
    naming a stored vocabulary is refused with a message saying how to run it. Without
    `files`, a node naming a file is refused and the file never opened: a PNode runs
    networks from others, and reads no path they name.
    """

    def __init__(self, stored: VocabularySource | None = None, files: bool = True) -> None:
        self._stored = stored
        self._files = files
        self._loaded: dict[tuple[str, str], Tokenizer] = {}
        self._lock = threading.Lock()

    def load(self, node_id: str, vocab_path: str | None, vocabulary: str | None) -> Tokenizer:
        """The vocabulary stored under the id `vocabulary`, else the file `vocab_path`."""
        key = ("stored", vocabulary) if vocabulary is not None else ("file", str(vocab_path))
        with self._lock:  # one load per vocabulary, even when several nodes ask at once
            tok = self._loaded.get(key)
            if tok is None:
                tok = self._loaded[key] = self._read(key, node_id)
        return tok

    def _read(self, key: tuple[str, str], node_id: str) -> Tokenizer:
        kind, name = key
        if kind == "stored":
            if self._stored is None:
                raise ValueError(f"{node_id!r}: vocabulary {name!r} is stored by an orchestrator; run the "
                                 "network on a cluster, or give vocab_path")
            return Tokenizer.from_str(self._stored(name))
        if not self._files:
            raise ValueError(f"{node_id!r}: vocab_path {name!r} is a file, and files are not read here; name a "
                             "vocabulary stored by the orchestrator instead")
        if not Path(name).is_file():
            raise ValueError(f"{node_id!r}: vocab_path {name!r} does not exist")
        return Tokenizer.from_file(name)
