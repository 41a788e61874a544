"""Killing any process at any moment changes nothing in the result.

Real `dcnr orchestrator` and `dcnr pnode` processes on loopback (`dcnr.cluster.LocalCluster`,
1 s heartbeats) train the tiny LM for 30 steps with a checkpoint every 5; processes are SIGKILLed,
SIGSTOPped and restarted mid-session; every run must complete all steps with final
parameters bit-identical to an uninterrupted LocalExecutor run (CPU fp32, 1 thread).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tiny_lm_sessions
import torch
from tiny_lm_sessions import NETWORK, TEXTS, assert_final_parameters, fault_points, reference_parameters
from tokenizers import Tokenizer

import dcnr
from dcnr.cluster import ORCHESTRATOR, LocalCluster
from dcnr.data.vocab import train_vocabulary
from dcnr.runtime.memory import estimate_vnode_memory

STEPS, EVERY, BATCH, MICRO, SEED, HEARTBEAT = 30, 5, 4, 2, 9, 1.0
TIMEOUT = 180.0


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[LocalCluster]:
    """An orchestrator and PNodes p0..p2 (started by `start`); every one is stopped at the end, whatever happens."""
    cluster = LocalCluster(tmp_path, 3, heartbeat_interval=HEARTBEAT, step_timeout=60)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture()
def faults() -> random.Random:
    return fault_points()


@pytest.fixture(scope="module")
def vocab() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


@pytest.fixture(scope="module")
def reference(vocab: Tokenizer) -> dict[str, torch.Tensor]:
    """The uninterrupted run: 30 steps in one process."""
    return reference_parameters(vocab, STEPS, BATCH, MICRO, SEED)


def start(fleet: LocalCluster, vocab: Tokenizer, budget: int | None = None, every: int = EVERY) -> str:
    """Orchestrator and PNodes up, data and network stored, a session started; returns its id."""
    if budget:
        fleet.pnode_args = ["--memory-budget", str(budget)]
    c = fleet.start()
    c.upload_vocabulary("v", vocab.to_str())
    c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
    c.create_network(NETWORK, name="lm")
    return c.create_session("lm", "d", STEPS, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
                            checkpoint_every=every, start=True).id


def follow(fleet: LocalCluster, session: str, actions: dict[int, Callable[[], None]]) -> None:
    tiny_lm_sessions.follow(fleet, session, actions, TIMEOUT)


@pytest.mark.slow
def test_sigkill_of_one_pnode(fleet: LocalCluster, vocab: Tokenizer, reference: dict[str, torch.Tensor],
                              faults: random.Random) -> None:
    step = faults.randint(1, STEPS - 2)  # a random step: the log of a failure names it
    session = start(fleet, vocab)
    follow(fleet, session, {step: lambda: fleet.kill("p1")})
    assert_final_parameters(fleet, reference, f"p1 killed at step {step}")
    assert "p1" not in fleet.alive()


@pytest.mark.slow
def test_sigkill_of_two_pnodes_at_different_steps(fleet: LocalCluster, vocab: Tokenizer,
                                                  reference: dict[str, torch.Tensor], faults: random.Random) -> None:
    first, second = sorted(faults.sample(range(1, STEPS - 1), 2))
    session = start(fleet, vocab)
    follow(fleet, session, {first: lambda: fleet.kill("p0"),
                            second: lambda: fleet.kill("p2")})
    assert_final_parameters(fleet, reference, f"p0 killed at step {first}, p2 at step {second}")
    assert fleet.alive() == {"p1"}


@pytest.mark.slow
def test_sigkill_and_restart_of_the_orchestrator(fleet: LocalCluster, vocab: Tokenizer,
                                                 reference: dict[str, torch.Tensor]) -> None:
    session = start(fleet, vocab)

    def restart() -> None:
        fleet.kill(ORCHESTRATOR)
        time.sleep(1.0)
        fleet.start_orchestrator()  # same state dir, same storage, same port

    follow(fleet, session, {14: restart})
    assert_final_parameters(fleet, reference)


@pytest.mark.slow
def test_a_pnode_frozen_past_the_death_timeout_then_woken(fleet: LocalCluster, vocab: Tokenizer,
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
        fleet: LocalCluster, vocab: Tokenizer, reference: dict[str, torch.Tensor]) -> None:
    """The kills land between a checkpoint's first blob and its manifest (watched on disk, with a
    checkpoint after every step); the torn checkpoint is never loaded and the result is unchanged."""
    session = start(fleet, vocab, every=1)
    storage = fleet.state_dir / "state" / "storage"

    def count(folder: str) -> int:
        return sum(1 for p in (storage / folder).rglob("*") if p.is_file() and not p.name.startswith("."))

    def kill_mid_checkpoint() -> None:
        deadline = time.monotonic() + 60
        manifests, blobs = count("manifests"), count("blobs")
        while True:  # wait for a checkpoint in progress: new blobs, no new manifest yet
            assert time.monotonic() < deadline, "never caught a checkpoint being written"
            now_manifests, now_blobs = count("manifests"), count("blobs")
            if now_manifests == manifests and now_blobs > blobs:
                fleet.kill(ORCHESTRATOR)
                fleet.kill("p0")
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
def test_sigkill_when_the_survivors_cannot_hold_the_vnodes(fleet: LocalCluster, vocab: Tokenizer,
                                                         reference: dict[str, torch.Tensor]) -> None:
    """Budgets fit the network on 3 PNodes but not on 2: training waits for a new PNode, which
    restores the lost VNodes from storage."""
    spec = dcnr.parse_network(NETWORK)
    total = sum(estimate_vnode_memory(n, BATCH // MICRO) for n in spec.nodes.values())
    session = start(fleet, vocab, budget=int(total * 0.45))

    def replace() -> None:
        fleet.kill("p1")
        time.sleep(4 * HEARTBEAT)
        fleet.start_pnode("p3")  # with the same budget

    follow(fleet, session, {11: replace})
    assert_final_parameters(fleet, reference)
    assert fleet.alive() == {"p0", "p2", "p3"}, fleet.log("p3")

