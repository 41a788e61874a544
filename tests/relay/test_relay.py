"""PNodes behind NAT: outbound-only PNodes listen on no port, take part through a relay, and train exactly
as PNodes that listen do; a relayed PNode or a relay killed mid-session changes nothing in the result.

Real `dcnr orchestrator`, `dcnr pnode` and `dcnr relay` processes on loopback (`LocalCluster`, 1 s
heartbeats) train the tiny LM; final parameters must be bit-identical to an uninterrupted `LocalExecutor`
run (CPU fp32, 1 thread). Fault points are drawn from a printed seed (`DCNR_FAULT_SEED` replays one).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tiny_lm_sessions
import torch
from tiny_lm_sessions import NETWORK, TEXTS, assert_final_parameters, fault_points, reference_parameters
from tokenizers import Tokenizer

from dcnr.cluster import ORCHESTRATOR, LocalCluster
from dcnr.data.vocab import train_vocabulary

STEPS, EVERY, BATCH, MICRO, SEED = 12, 4, 4, 2, 5
TIMEOUT = 240.0
OUTBOUND = "--outbound-only"


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on: its socket inodes that /proc/net/tcp{,6} lists in state LISTEN."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture(scope="module")
def vocab() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


@pytest.fixture(scope="module")
def reference(vocab: Tokenizer) -> dict[str, torch.Tensor]:
    return reference_parameters(vocab, STEPS, BATCH, MICRO, SEED)


@pytest.fixture()
def faults() -> random.Random:
    return fault_points()


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, [], heartbeat_interval=1.0, step_timeout=60)
    try:
        yield cluster
    finally:
        cluster.close()


def start(fleet: LocalCluster, vocab: Tokenizer, pnodes: dict[str, list[str]], relays: list[str] | None = None,
          validation: str = "") -> str:
    """The orchestrator, `relays`, PNodes (name -> extra `dcnr pnode` arguments), data, the network and a
    started session; returns its id."""
    fleet.start_orchestrator()
    for name in relays or []:
        fleet.start_relay(name)
    fleet.wait_for_relays(relays or [])
    for name, args in pnodes.items():
        fleet.start_pnode(name, *args)
    fleet.wait_for_pnodes(list(pnodes))
    c = fleet.client
    c.upload_vocabulary("v", vocab.to_str())
    c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
    c.create_network(NETWORK, name="lm")
    return c.create_session("lm", "d", STEPS, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
                            checkpoint_every=EVERY, start=True, validation=validation).id


def follow(fleet: LocalCluster, session: str, actions: dict[int, Callable[[], None]] | None = None) -> None:
    tiny_lm_sessions.follow(fleet, session, actions or {}, TIMEOUT)


def addresses(fleet: LocalCluster) -> dict[str, str]:
    return {fleet.name_of(p.id): p.address for p in fleet.client.list_pnodes() if p.state == "alive"}


@pytest.mark.slow
def test_outbound_only_pnodes_listen_on_no_port_and_train_bit_identically(
        fleet: LocalCluster, vocab: Tokenizer, reference: dict[str, torch.Tensor]) -> None:
    """p0 listens; p1 and p2 are outbound-only through the relay process r0: one session, the result of one
    process, every byte between them and the rest went through the relay, and their work was verified (half
    of it re-executed by another PNode, through the relay too)."""
    session = start(fleet, vocab, {"p0": [], "p1": [OUTBOUND], "p2": [OUTBOUND]}, ["r0"], validation="sample:0.5")
    relay = fleet.relay_id("r0")
    where = addresses(fleet)
    assert "/" not in where["p0"]
    for name in ("p1", "p2"):
        assert where[name].endswith(f"/{fleet.ids[name]}"), where  # "relay-host:port/ID"
        assert listening_ports(fleet.procs[name].pid) == set(), f"{name} listens"
    assert listening_ports(fleet.procs["p0"].pid) != set()
    r0 = next(r for r in fleet.client.list_relays() if r.id == relay)
    assert sorted(r0.pnodes) == sorted([fleet.ids["p1"], fleet.ids["p2"]])  # a relay serves: not the orchestrator
    follow(fleet, session)
    assert_final_parameters(fleet, reference, "p1 and p2 relayed")
    for name in ("p1", "p2"):
        assert listening_ports(fleet.procs[name].pid) == set(), f"{name} listened while training"
    carried = {r.id: r.bytes_forwarded for r in fleet.client.list_relays()}
    fleet.wait_for(lambda: {r.id: r.bytes_forwarded for r in fleet.client.list_relays()}[relay] > 10**6,
                   "the relay reporting the bytes it carried", 30)
    assert carried["orchestrator"] == 0  # nothing went through the orchestrator's own relay
    relayed = {fleet.ids["p1"], fleet.ids["p2"]}
    events = fleet.client.validation_events(session)
    assert {e.verdict for e in events} <= {"pass", "unverifiable"}, [e for e in events if e.verdict != "pass"]
    checked = [e for e in events if e.verdict == "pass" and (e.accused in relayed or e.verifier in relayed)]
    assert checked, "no work of or by a relayed PNode was verified"


@pytest.mark.slow
def test_a_pnode_the_orchestrator_cannot_reach_joins_through_its_relay_and_survives_its_restart(
        fleet: LocalCluster, vocab: Tokenizer, reference: dict[str, torch.Tensor], faults: random.Random) -> None:
    """p1 advertises an address nothing answers at: the orchestrator's probe fails, so p1 closes its port and
    attaches to the orchestrator's own relay (no relay process runs). The orchestrator is SIGKILLed and
    restarted mid-session, which breaks p1's stream too: p1 attaches again, and the result is unchanged."""
    step = faults.randint(2, STEPS - 2)
    session = start(fleet, vocab, {"p0": [], "p1": ["--host", "127.0.0.2", "--advertise", "127.0.0.3"]})
    assert addresses(fleet)["p1"] == f"127.0.0.1:{fleet.relay_port}/{fleet.ids['p1']}"
    fleet.wait_for(lambda: listening_ports(fleet.procs["p1"].pid) == set(), "p1 closing its port", 30)
    assert "joining through a relay" in fleet.log("p1", 20000)

    def restart() -> None:
        fleet.kill(ORCHESTRATOR)
        time.sleep(1.0)
        fleet.start_orchestrator()  # same state, same ports (its relay's too)

    follow(fleet, session, {step: restart})
    assert_final_parameters(fleet, reference, f"p1 relayed by the orchestrator, killed at step {step}")
    assert "attached to relay orchestrator again" in fleet.log("p1", 50000)
    assert addresses(fleet)["p1"] == f"127.0.0.1:{fleet.relay_port}/{fleet.ids['p1']}"


@pytest.mark.slow
def test_sigkill_of_a_relayed_pnode_and_of_a_relay(fleet: LocalCluster, vocab: Tokenizer,
                                                   reference: dict[str, torch.Tensor], faults: random.Random) -> None:
    """Three outbound-only PNodes on two relays: relay r0 is killed, then a relayed PNode hosting work; the
    PNodes r0 carried attach to r1, and the session ends bit-identical."""
    first, second = sorted(faults.sample(range(1, STEPS - 1), 2))
    session = start(fleet, vocab, {"p0": [OUTBOUND], "p1": [OUTBOUND], "p2": [OUTBOUND]}, ["r0", "r1"])
    r0, r1 = fleet.relay_id("r0"), fleet.relay_id("r1")
    carried = {r.id: set(r.pnodes) for r in fleet.client.list_relays()}
    assert carried[r0] and carried[r1], carried  # balanced: both carry PNodes
    killed: list[str] = []

    def kill_a_busy_pnode() -> None:
        busy = sorted(fleet.name_of(p.id) for p in fleet.client.list_pnodes() if p.state == "alive" and p.vnodes)
        killed.append(busy[-1])
        fleet.kill(killed[0])

    follow(fleet, session, {first: lambda: fleet.kill("r0"), second: kill_a_busy_pnode})
    assert_final_parameters(fleet, reference, f"relay r0 killed at step {first}, {killed} at step {second}")
    fleet.wait_for(lambda: killed[0] not in addresses(fleet), f"{killed[0]} being marked dead", 30)
    alive = addresses(fleet)
    assert set(alive) == {"p0", "p1", "p2"} - set(killed)
    relay_r1 = next(r.address for r in fleet.client.list_relays() if r.id == r1)
    assert all(a.startswith(f"{relay_r1}/") for a in alive.values()), alive  # r0's PNodes attached to r1
    fleet.wait_for(lambda: {r.id: r.state for r in fleet.client.list_relays()}[r0] == "dead",
                   "relay r0 being marked dead", 30)
