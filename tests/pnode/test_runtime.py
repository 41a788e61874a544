"""The PNode work loop on its own: duplicates, late messages and per-task timeouts."""

from __future__ import annotations

import time

import torch
import yaml

import dcnr
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.v2 import common_pb2, node_pb2
from dcnr.spec.transformer import transformer_lm


class RecordingLink:
    """Stands in for the orchestrator: every VNode is local, reports are kept."""

    def __init__(self, spec: dcnr.NetworkSpec) -> None:
        self.text = spec.source
        self.events: list[node_pb2.ProgressEvent] = []

    def network_yaml(self, name: str) -> str:
        return self.text

    def vocabulary_json(self, name: str) -> str:
        raise ValueError(f"unknown vocabulary {name!r}")

    def locate(self, network: str, vnode: str, refresh: bool) -> tuple[str, str]:
        return "me", ""

    def report(self, events: list[node_pb2.ProgressEvent]) -> None:
        self.events.extend(events)


def make(task_timeout: float = 300.0) -> tuple[PNodeRuntime, RecordingLink]:
    doc = transformer_lm("rt", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=30, dropout=0.0)
    spec = dcnr.parse_network(yaml.safe_dump(doc))
    link = RecordingLink(spec)
    runtime = PNodeRuntime("me", link, task_timeout=task_timeout)
    runtime.start()
    return runtime, link


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_train_step_runs_to_completion_and_duplicates_are_ignored() -> None:
    runtime, link = make()
    try:
        meta = common_pb2.RequestId(network="rt", run="r1", step=0, micro_batch=0, kind="train", grad_scale=1.0)
        tokens = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
        assert runtime.submit("fwd", meta, "embedder", 0, tokens)
        assert runtime.submit("fwd", meta, "loss", 1, tokens)
        assert not runtime.submit("fwd", meta, "loss", 1, tokens)  # a duplicate hop is refused at the door
        live = len(dcnr.runtime.executor.backward_set(runtime.view("rt").spec))
        wait_for(lambda: sum(e.kind == node_pb2.ProgressEvent.BACKWARD_DONE for e in link.events) == live)
        costs = [e for e in link.events if e.kind == node_pb2.ProgressEvent.OUTPUT]
        assert [e.vnode for e in costs] == ["loss"]
        assert not [e for e in link.events if e.kind == node_pb2.ProgressEvent.FAILED]
        assert runtime.stats["hops_sent"] == 0 and runtime.stats["local_hops"] > 0
    finally:
        runtime.stop()


def test_late_training_messages_are_dropped() -> None:
    runtime, link = make()
    try:
        runtime.view("rt")
        runtime.call(lambda: runtime.update("rt", 1.0, True, False, step=3))
        late = common_pb2.RequestId(network="rt", run="old", step=2, micro_batch=0, kind="train", grad_scale=1.0)
        runtime.submit("fwd", late, "embedder", 0, torch.zeros(1, 6, dtype=torch.long))
        runtime.call(lambda: None)  # the queue has been worked through
        assert runtime.host.local("rt") == [] and link.events == []  # nothing was even created
    finally:
        runtime.stop()


def test_requests_waiting_past_the_task_timeout_are_dropped_and_reported() -> None:
    runtime, link = make(task_timeout=0.3)
    try:
        meta = common_pb2.RequestId(network="rt", run="r", step=0, micro_batch=0, kind="train", grad_scale=1.0)
        runtime.submit("fwd", meta, "loss", 1, torch.zeros(2, 6, dtype=torch.long))  # slot 0 never comes
        wait_for(lambda: any(e.kind == node_pb2.ProgressEvent.FAILED for e in link.events), timeout=10)
        failed = next(e for e in link.events if e.kind == node_pb2.ProgressEvent.FAILED)
        assert "timed out" in failed.error and "loss" in failed.error
        assert runtime.stats["refused"] == 1
        assert not runtime.host.vnode("rt", "loss").holds(dcnr.runtime.vnode.RequestId(0, 0, "train"))
    finally:
        runtime.stop()
