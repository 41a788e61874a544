"""Using a stored network: forward passes, single training steps, evaluation on a dataset, chat.

Owns what a request means beyond the driver's primitives: a single training step is
refused while a session trains the network; evaluation averages the costs over held-out
batches of a dataset's validation split; chat turns a prompt into token ids with the
network's vocabulary and generated ids back into text, piece by piece; an evaluation on the
dataset a session of the network trains on is kept as that session's held-out loss. Batch sizes,
micro-batches, evaluation batches and chat tokens are held to the orchestrator's `Limits`
before any work starts. Knows nothing of gRPC; tensors only pass through.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dcnr.errors import DeadlineExceeded, InvalidArgument, NotFound
from dcnr.orchestrator.datastore import DataStore
from dcnr.orchestrator.driver import Driver
from dcnr.orchestrator.history import History
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.networks import Networks
from dcnr.orchestrator.store import StateStore
from dcnr.runtime.sampling import lm_interface
from dcnr.transport.control import ChatChunk, TrainResult

VALIDATION_BATCHES = 4  # held-out batches an evaluation averages over, unless asked otherwise
VALIDATION_BATCH_SIZE = 8
CHAT_TOKENS = 64  # tokens a chat generates, unless asked otherwise


class Serving:
    def __init__(self, store: StateStore, driver: Driver, data: DataStore, networks: Networks,
                 limits: Limits, history: History | None = None) -> None:
        self.store = store
        self.history = history
        self.driver = driver
        self.data = data
        self.networks = networks
        self.limits = limits

    def forward(self, network: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        """The named outputs (default: all) of one forward pass."""
        self._check_batch(inputs)
        return self.driver.forward(network, inputs, list(outputs) if outputs else None)

    def train(self, network: str, inputs: Mapping[str, Any], micro_batches: int = 1) -> TrainResult:
        """One training step outside any session."""
        self.limits.check("max_micro_batches", micro_batches, f"micro_batches {micro_batches}")
        self._check_batch(inputs)
        self.networks.refuse_if_training(network)
        costs, step, skipped, _ = self.driver.train_step(network, inputs, micro_batches)
        return TrainResult(costs, step, skipped)

    def validate(self, network: str, dataset: str, batches: int | None = None, batch_size: int | None = None,
                 seed: int = 0) -> dict[str, float]:
        """Mean costs over held-out batches of the dataset's validation split; DeadlineExceeded when the
        batches take longer than the driver's timeout (a step's) all together."""
        batches, size = batches or VALIDATION_BATCHES, batch_size or VALIDATION_BATCH_SIZE
        self.limits.check("max_validation_batches", batches, f"batches {batches}")
        self.limits.check("max_batch_size", size, f"batch_size {size}")
        spec = self.driver.network(network).spec
        ds = self.data.dataset(dataset)
        _, _, seq_len = lm_interface(spec)
        deadline = time.monotonic() + self.driver.timeout
        totals: dict[str, float] = {}
        for i in range(batches):
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"evaluating network {network!r} took longer than {self.driver.timeout:g} s "
                                       f"after {i} of {batches} batches; ask for fewer")
            x, y = ds.batch(seed, i, size, seq_len, split="validation")
            for k, v in self.driver.costs(network, {"tokens": x, "targets": y}).items():
                totals[k] = totals.get(k, 0.0) + v / batches
        self._held_out(network, dataset, totals)
        return totals

    def _held_out(self, network: str, dataset: str, costs: dict[str, float]) -> None:
        """Keep an evaluation's first cost as the held-out loss, on its latest step, of the session that trains the
        network on that dataset (the running one, else the newest)."""
        if self.history is None or not costs:
            return
        trained = [s for s in self.store.list_sessions() if s.network == network and s.dataset == dataset]
        running = [s for s in trained if s.state == "running"]
        if trained:
            self.history.held_out((running or trained)[-1].id, next(iter(costs.values())))

    def chat(self, network: str, prompt: str, vocabulary: str = "", max_new_tokens: int | None = None,
             temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> Iterator[ChatChunk]:
        """Generated text, token by token, with `vocabulary` (default: the one the network was trained with)."""
        max_new_tokens = max_new_tokens or CHAT_TOKENS
        self.limits.check("max_chat_tokens", max_new_tokens, f"max_new_tokens {max_new_tokens}")
        tok = self.data.tokenizer(vocabulary or self.vocabulary_of(network))
        bos = tok.token_to_id("<bos>")
        ids = tok.encode(prompt, add_special_tokens=False).ids
        new: list[int] = []
        text = ""
        for token in self.driver.generate(network, ids or ([bos] if bos is not None else []),
                                          max_new_tokens, temperature, top_k, seed):
            new.append(token)
            full = tok.decode(new)
            if full.endswith("\ufffd"):  # an incomplete UTF-8 sequence: its text comes with a later token
                yield ChatChunk("", token)
                continue
            yield ChatChunk(full[len(text):], token)
            text = full

    def _check_batch(self, inputs: Mapping[str, Any]) -> None:
        """Each input's batch (its first dimension, or its number of texts) within `max_batch_size`."""
        for name, value in inputs.items():
            rows = len(value) if isinstance(value, list) else int(value.shape[0]) if value.dim() else 1
            self.limits.check("max_batch_size", rows, f"input {name!r}: a batch of {rows}")

    def vocabulary_of(self, network: str) -> str:
        """The vocabulary a network was last trained with (through a session), or the only one there is."""
        self.store.get_network(network)  # NotFound first
        trained = [s for s in self.store.list_sessions() if s.network == network and s.step > 0]
        for rec in reversed(trained):
            with contextlib.suppress(NotFound):
                return str(self.data.get_dataset(rec.dataset)["vocabulary"])
        names = [v["name"] for v in self.data.list_vocabularies()]
        if len(names) == 1:
            return str(names[0])
        raise InvalidArgument(f"network {network!r} was not trained through a session here; name its vocabulary "
                              f"(one of: {', '.join(names) or 'none stored'})")
