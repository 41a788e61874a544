"""Killing any process at any moment changes nothing in the result.

Real `dcnr orchestrator` and `dcnr pnode` processes on loopback (short heartbeats)
train the tiny LM for 30 steps with a checkpoint every 5; processes are SIGKILLed,
SIGSTOPped and restarted mid-session; every run must complete all steps with final
parameters bit-identical to an uninterrupted LocalExecutor run (CPU fp32, 1 thread).
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch
from safetensors.torch import load as load_safetensors
from tokenizers import Tokenizer

import dcnr
from dcnr.data.dataset import TokenDataset
from dcnr.data.vocab import train_vocabulary
from dcnr.proto.v2 import orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.runtime.memory import estimate_vnode_memory

ROOT = Path(__file__).resolve().parents[2]
NETWORK = (ROOT / "examples" / "networks" / "tiny_lm.yml").read_text()
TEXTS = [f"def f{i}(x):\n    return x * {i % 7} + {i // 7}  # line {i}\n" for i in range(400)]
STEPS, EVERY, BATCH, MICRO, SEED, HEARTBEAT = 30, 5, 4, 2, 9, 0.3
TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """An orchestrator and PNodes as child processes; every one is killed at the end, whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.channel = grpc.insecure_channel(self.address)
        self.control = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    def _spawn(self, name: str, *args: str) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "dcnr.cli.main", *args], stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_orchestrator(self) -> None:
        self._spawn("orchestrator", "orchestrator", "--port", str(self.port), "--state-dir", str(self.tmp / "state"),
                    "--heartbeat-interval", str(HEARTBEAT), "--step-timeout", "60")

    def start_pnode(self, name: str, budget: int | None = None) -> None:
        extra = ["--memory-budget", str(budget)] if budget else []
        self._spawn(name, "pnode", "--orchestrator", self.address, "--id", name, "--threads", "1",
                    "--heartbeat-interval", str(HEARTBEAT), *extra)

    def alive(self) -> set[str]:
        try:
            rows = self.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=5).pnodes
        except grpc.RpcError:
            return set()
        return {p.id for p in rows if p.state == "alive"}

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for name, proc in self.procs.items():
                if proc.poll() is not None and proc.returncode not in (-signal.SIGKILL, 0):
                    raise AssertionError(f"{name} exited with {proc.returncode}: {self.log(name)}")
            assert time.monotonic() < deadline, f"{what} did not happen in {timeout:g} s"
            time.sleep(0.1)

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)
        if sig == signal.SIGKILL:
            self.procs[name].wait(10)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]

    def close(self) -> None:
        self.channel.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(10)


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def vocab() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


@pytest.fixture(scope="module")
def reference(vocab: Tokenizer) -> dict[str, torch.Tensor]:
    """The uninterrupted run: 30 steps in one process."""
    ds = TokenDataset.from_texts(TEXTS, vocab, validation_fraction=0.1)
    ex = dcnr.LocalExecutor(dcnr.parse_network(NETWORK))
    for step in range(STEPS):
        x, y = ds.batch(SEED, step, BATCH, 64)
        ex.train_step({"tokens": x, "targets": y}, micro_batches=MICRO)
    return ex.parameters()


def start(fleet: Fleet, vocab: Tokenizer, pnodes: int = 3, budget: int | None = None, every: int = EVERY) -> str:
    """Orchestrator and PNodes up, data and network stored, a session started; returns its id."""
    fleet.start_orchestrator()
    for i in range(pnodes):
        fleet.start_pnode(f"p{i}", budget)
    fleet.wait_for(lambda: len(fleet.alive()) == pnodes, "all PNodes joining")
    c = fleet.control
    c.CreateVocabulary(orchestrator_pb2.CreateVocabularyRequest(name="v", tokenizer_json=vocab.to_str()), timeout=30)
    c.CreateDataset(iter([orchestrator_pb2.DatasetUpload(name="d", vocabulary="v", validation_fraction=0.1)]
                         + [orchestrator_pb2.DatasetUpload(text=t, end_of_document=True) for t in TEXTS]), timeout=60)
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=NETWORK, name="lm"), timeout=30)
    s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network="lm", dataset="d", steps=STEPS, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
        checkpoint_every=every), timeout=30)
    c.StartTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=30)
    return str(s.id)


def follow(fleet: Fleet, session: str, actions: dict[int, Callable[[], None]]) -> None:
    """Listen until the session completes, running `actions[step]` once when that step is reported.
    A listener cut off (the orchestrator was killed) listens again once it is back."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, "the session did not complete in time"
        try:
            for ev in fleet.control.ListenTrainSession(orchestrator_pb2.SessionRef(id=session), timeout=TIMEOUT):
                assert ev.state != "failed", f"session failed: {ev.error}\n{fleet.log('orchestrator')}"
                action = actions.pop(ev.step, None)
                if action is not None:
                    action()
                if ev.state == "completed":
                    return
            info = {s.id: s for s in fleet.control.ListTrainSessions(orchestrator_pb2.ListRequest(),
                                                                     timeout=10).sessions}[session]
            if info.state == "completed":
                return
        except grpc.RpcError:
            time.sleep(0.3)  # the orchestrator is away; it comes back (or the deadline fails the test)


def assert_final_parameters(fleet: Fleet, want: dict[str, torch.Tensor], what: str = "") -> None:
    blob = b"".join(ch.data for ch in fleet.control.ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name="lm"),
                                                                  timeout=60))
    got = {k: v for k, v in load_safetensors(blob).items() if not k.startswith("optim/")}
    assert set(got) == set(want)
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"{what}: parameters differ from the uninterrupted run: {different[:5]}"


@pytest.mark.slow
def test_sigkill_of_one_pnode(fleet: Fleet, vocab: Tokenizer, reference: dict[str, torch.Tensor]) -> None:
    step = random.randint(1, STEPS - 2)  # a random step: the log of a failure names it
    session = start(fleet, vocab)
    follow(fleet, session, {step: lambda: fleet.signal("p1", signal.SIGKILL)})
    assert_final_parameters(fleet, reference, f"p1 killed at step {step}")
    assert "p1" not in fleet.alive()


@pytest.mark.slow
def test_sigkill_of_two_pnodes_at_different_steps(fleet: Fleet, vocab: Tokenizer,
                                                  reference: dict[str, torch.Tensor]) -> None:
    first, second = sorted(random.sample(range(1, STEPS - 1), 2))
    session = start(fleet, vocab)
    follow(fleet, session, {first: lambda: fleet.signal("p0", signal.SIGKILL),
                            second: lambda: fleet.signal("p2", signal.SIGKILL)})
    assert_final_parameters(fleet, reference, f"p0 killed at step {first}, p2 at step {second}")
    assert fleet.alive() == {"p1"}


@pytest.mark.slow
def test_sigkill_and_restart_of_the_orchestrator(fleet: Fleet, vocab: Tokenizer,
                                                 reference: dict[str, torch.Tensor]) -> None:
    session = start(fleet, vocab)

    def restart() -> None:
        fleet.signal("orchestrator", signal.SIGKILL)
        time.sleep(1.0)
        fleet.start_orchestrator()  # same state dir, same storage, same port

    follow(fleet, session, {14: restart})
    assert_final_parameters(fleet, reference)


@pytest.mark.slow
def test_a_pnode_frozen_past_the_death_timeout_then_woken(fleet: Fleet, vocab: Tokenizer,
                                                          reference: dict[str, torch.Tensor]) -> None:
    session = start(fleet, vocab)

    def freeze() -> None:
        fleet.signal("p2", signal.SIGSTOP)
        fleet.wait_for(lambda: "p2" not in fleet.alive(), "the frozen PNode being declared dead", timeout=30)
        time.sleep(1.0)
        fleet.signal("p2", signal.SIGCONT)  # it wakes with stale work, which must change nothing

    follow(fleet, session, {10: freeze})
    assert_final_parameters(fleet, reference)


@pytest.mark.slow
def test_sigkill_of_a_pnode_and_the_orchestrator_while_checkpointing(
        fleet: Fleet, vocab: Tokenizer, reference: dict[str, torch.Tensor]) -> None:
    """The kills land between a checkpoint's first blob and its manifest (watched on disk, with a
    checkpoint after every step); the torn checkpoint is never loaded and the result is unchanged."""
    session = start(fleet, vocab, every=1)
    storage = fleet.tmp / "state" / "storage"

    def count(folder: str) -> int:
        return sum(1 for p in (storage / folder).rglob("*") if p.is_file() and not p.name.startswith("."))

    def kill_mid_checkpoint() -> None:
        deadline = time.monotonic() + 60
        manifests, blobs = count("manifests"), count("blobs")
        while True:  # wait for a checkpoint in progress: new blobs, no new manifest yet
            assert time.monotonic() < deadline, "never caught a checkpoint being written"
            now_manifests, now_blobs = count("manifests"), count("blobs")
            if now_manifests == manifests and now_blobs > blobs:
                fleet.signal("orchestrator", signal.SIGKILL)
                fleet.signal("p0", signal.SIGKILL)
                if count("manifests") == manifests:
                    break  # caught: blobs without their manifest
                fleet.start_orchestrator()  # the manifest slipped in first: try the next checkpoint
                fleet.start_pnode("p0")
                fleet.wait_for(lambda: "p0" in fleet.alive(), "p0 back")
            manifests, blobs = now_manifests, now_blobs
            time.sleep(0.001)
        time.sleep(0.5)
        fleet.start_orchestrator()

    follow(fleet, session, {10: kill_mid_checkpoint})
    assert_final_parameters(fleet, reference)


@pytest.mark.slow
def test_sigkill_when_the_survivors_cannot_hold_the_vnodes(fleet: Fleet, vocab: Tokenizer,
                                                         reference: dict[str, torch.Tensor]) -> None:
    """Budgets fit the network on 3 PNodes but not on 2: training waits for a new PNode, which
    restores the lost VNodes from storage."""
    spec = dcnr.parse_network(NETWORK)
    total = sum(estimate_vnode_memory(n, BATCH // MICRO) for n in spec.nodes.values())
    session = start(fleet, vocab, budget=int(total * 0.45))

    def replace() -> None:
        fleet.signal("p1", signal.SIGKILL)
        time.sleep(4 * HEARTBEAT)
        fleet.start_pnode("p3", int(total * 0.45))

    follow(fleet, session, {11: replace})
    assert_final_parameters(fleet, reference)
    assert fleet.alive() == {"p0", "p2", "p3"}, fleet.log("p3")

