"""Step timelines: PNodes time their part of each training step and report it with the update; the orchestrator
aligns the reports on its clock, keeps the last steps of each session, and keeps nothing a PNode could not have
done (reports are not trusted)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from dcnr.orchestrator.driver import Driver, Inbox, Members
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.store import NetworkRecord, SQLiteStore
from dcnr.orchestrator.timeline import StepRecord, Timelines, draw
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.pnode.timing import StepTimer
from dcnr.proto.version import VERSION_TEXT
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.grpc.pnode import timing_from_pb, timing_to_pb
from dcnr.transport.memory import MemoryConnector, MemoryFabric, MemoryHopTransport, MemoryOrchestratorLink
from dcnr.transport.messages import Hop, Membership, Run, StepTiming, TimedHop, TimedWork

TEXT = yaml.safe_dump(transformer_lm("mem", blocks=2, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=40,
                                     dropout=0.0), sort_keys=False)


# -- drawing one step ---------------------------------------------------------------------------------
def record(reports: dict[str, StepTiming], step: int = 1, run: str = "r1") -> StepRecord:
    return StepRecord(step, run, 1.0, {"pa": (0.0, 0.02), "pb": (0.01, 0.03)}, {"emb": "pa", "head": "pb"}, reports)


def test_times_are_aligned_on_the_midpoint_of_each_begin_run_and_hops_are_joined() -> None:
    a = StepTiming("r1", (TimedWork("emb", "fwd", 0, 0.1, 0.2), TimedWork("emb", "bwd", 0, 0.6, 0.7),
                          TimedWork("emb", "update", 0, 0.8, 0.81)),
                   sent=(TimedHop("head", "fwd", 0, 0, 0.2, 4096),),
                   received=(TimedHop("emb", "bwd", 0, 3, 0.5, 512, "pb"),))
    b = StepTiming("r1", (TimedWork("head", "fwd", 0, 0.25, 0.3),), sent=(TimedHop("emb", "bwd", 0, 3, 0.35, 512),),
                   received=(TimedHop("head", "fwd", 0, 0, 0.22, 4096, "pa"),))
    drawn = draw(record({"pa": a, "pb": b}))
    assert drawn["step"] == 1 and drawn["pnodes"] == ["pa", "pb"]
    spans = {(s["vnode"], s["op"]): (s["pnode"], s["start"], s["end"]) for s in drawn["spans"]}
    assert spans[("emb", "fwd")] == ("pa", pytest.approx(0.11), pytest.approx(0.21))  # pa's zero: 0.01
    assert spans[("head", "fwd")] == ("pb", pytest.approx(0.27), pytest.approx(0.32))  # pb's zero: 0.02
    assert spans[("emb", "update")][0] == "pa" and [s["micro_batch"] for s in drawn["spans"]] == [0] * 4
    assert [s["start"] for s in drawn["spans"]] == sorted(s["start"] for s in drawn["spans"])
    wire = {w["op"]: w for w in drawn["wire"]}
    assert wire["fwd"] == {"from": "pa", "to": "pb", "vnode": "head", "micro_batch": 0, "op": "fwd",
                           "start": pytest.approx(0.21), "end": pytest.approx(0.24), "bytes": 4096}
    assert wire["bwd"]["from"] == "pb" and wire["bwd"]["end"] == pytest.approx(0.51)


def test_what_a_pnode_could_not_have_done_is_left_out() -> None:
    liar = StepTiming("r1", (TimedWork("head", "fwd", 0, 0.1, 0.2),  # hosted by pb, not by pa
                             TimedWork("emb", "fwd", 0, math.nan, 0.2), TimedWork("emb", "fwd", 0, 0.3, 0.1),
                             TimedWork("emb", "bwd", 0, 0.1, 1e9), TimedWork("emb", "bwd", 1, 0.1, 0.2)),
                      sent=(TimedHop("nowhere", "fwd", 0, 0, 0.2, 10),),
                      received=(TimedHop("head", "fwd", 0, 0, 0.3, 10, "pb"),  # head is not pa's
                                TimedHop("emb", "bwd", 0, 0, 0.3, 10, "stranger")))
    stale = StepTiming("r0", (TimedWork("head", "fwd", 0, 0.1, 0.2),))  # another run's report
    drawn = draw(record({"pa": liar, "pb": stale, "pc": StepTiming("r1", (TimedWork("emb", "fwd", 0, 0, 0.1),))}))
    assert [(s["vnode"], s["op"], s["micro_batch"]) for s in drawn["spans"]] == [("emb", "bwd", 1)]
    assert drawn["wire"] == [] and drawn["pnodes"] == ["pa", "pb"]


def test_a_hop_that_seems_to_arrive_before_it_left_is_drawn_arriving_as_it_left() -> None:
    a = StepTiming("r1", sent=(TimedHop("head", "fwd", 0, 0, 0.30, 8),))
    b = StepTiming("r1", received=(TimedHop("head", "fwd", 0, 0, 0.25, 8, "pa"),))  # clocks a little off
    (hop,) = draw(record({"pa": a, "pb": b}))["wire"]
    assert hop["start"] == hop["end"] == pytest.approx(0.31)


def test_the_last_steps_of_the_last_sessions_are_kept_and_a_rollback_replaces_steps() -> None:
    kept = Timelines(keep_steps=3, keep_sessions=2)
    for step in range(1, 6):
        kept.add("s1", record({}, step, f"r{step}"))
    assert kept.steps("s1") == [3, 4, 5]
    assert kept.timeline("s1")["step"] == 5 and kept.timeline("s1", 4)["step"] == 4  # type: ignore[index]
    assert kept.timeline("s1", 1) is None and kept.timeline("nobody") is None
    kept.add("s1", record({}, 4, "again"))  # rolled back to step 3 and trained step 4 again
    assert kept.steps("s1") == [3, 4]
    kept.add("s2", record({}, 1))
    kept.add("s3", record({}, 1))
    assert kept.steps("s1") == [] and kept.steps("s3") == [1]  # the session that trained longest ago went
    kept.forget("s3")
    assert kept.steps("s3") == []


def test_a_timing_crosses_the_wire_intact() -> None:
    timing = StepTiming("r1", (TimedWork("emb", "fwd", 2, 0.25, 0.5), TimedWork("emb", "update", 0, 1.0, 1.5)),
                        (TimedHop("head", "bwd", 1, 3, 0.75, 4096),), (TimedHop("emb", "fwd", 0, 0, 0.5, 64, "pb"),),
                        truncated=True)
    assert timing_from_pb(timing_to_pb(timing)) == timing


# -- PNodes timing a real step ------------------------------------------------------------------------
class MemoryFleet:
    """An orchestrator's fleet and driver and three PNode runtimes in this process (no gRPC)."""

    def __init__(self, state: Path) -> None:
        self.fabric = MemoryFabric()
        self.store = SQLiteStore(state / "state.sqlite")
        self.fleet = Fleet(self.store, MemoryConnector(self.fabric), heartbeat_interval=3600)
        self.inbox = Inbox()
        self.timelines = Timelines()
        self.driver = Driver(self.store, self.fleet, self.inbox, timeout=60, timelines=self.timelines)
        members = Members(self.fleet, self.inbox)
        self.runtimes = []
        for i in range(3):
            runtime = PNodeRuntime(f"p{i}", MemoryHopTransport(self.fabric), MemoryOrchestratorLink(members))
            runtime.start()
            self.fabric.attach(f"mem:p{i}", runtime)
            members.register(Membership(f"p{i}", f"mem:p{i}", {"memory_budget_bytes": 2**30}, VERSION_TEXT))
            self.runtimes.append(runtime)
        self.store.create_network(NetworkRecord("mem", TEXT))

    def close(self) -> None:
        for r in self.runtimes:
            r.stop()
        self.driver.close()
        self.fleet.close()
        self.store.close()


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[MemoryFleet]:
    f = MemoryFleet(tmp_path)
    yield f
    f.close()


def batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"tokens": torch.randint(0, 40, (4, 6), generator=g), "targets": torch.randint(0, 40, (4, 6), generator=g)}


def test_every_vnode_of_a_session_step_is_timed_where_it_ran(fleet: MemoryFleet) -> None:
    fleet.driver.train_step("mem", batch(0), micro_batches=2)  # outside a session: not kept
    assert fleet.timelines.steps("s1") == []
    for step in (1, 2):
        fleet.driver.train_step("mem", batch(step), micro_batches=2, session="s1", session_step=step)
    drawn = fleet.timelines.timeline("s1")
    assert drawn is not None and drawn["step"] == 2
    net = fleet.driver.network("mem")
    placement = fleet.store.placements("mem")
    assert drawn["pnodes"] == sorted(set(placement.values())) == ["p0", "p1", "p2"]
    ops = {(s["vnode"], s["op"], s["micro_batch"]): s for s in drawn["spans"]}
    trained = net.router.needed(Run("mem", "probe", 0, "train"))
    for vnode in net.spec.nodes:
        for mb in (0, 1):
            if vnode in trained:
                assert ops[(vnode, "fwd", mb)]["pnode"] == placement[vnode]
            if vnode in net.router.live - net.router.roots:  # a cost's backward starts within its forward
                assert ops[(vnode, "bwd", mb)]["pnode"] == placement[vnode]
        assert ops[(vnode, "update", 0)]["pnode"] == placement[vnode]
    assert all(0 <= s["start"] <= s["end"] for s in drawn["spans"])
    crossing = [e for e in net.spec.edges if placement[e.src] != placement[e.dst]]
    assert crossing and len(drawn["wire"]) >= 2 * len(crossing)  # forward, per micro-batch
    assert all(w["from"] != w["to"] and w["bytes"] > 0 and 0 <= w["start"] <= w["end"] for w in drawn["wire"])
    assert {w["op"] for w in drawn["wire"]} == {"fwd", "bwd"}


def test_a_pnode_without_timing_reports_none_and_the_step_trains_alike(fleet: MemoryFleet) -> None:
    for runtime in fleet.runtimes:
        runtime.timer = StepTimer(enabled=False)
    fleet.driver.train_step("mem", batch(1), micro_batches=2, session="s1", session_step=1)
    drawn = fleet.timelines.timeline("s1")
    assert drawn is not None and drawn["spans"] == [] and drawn["wire"] == []


def test_records_of_a_run_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from dcnr.pnode import timing

    monkeypatch.setattr(timing, "MAX_RECORDS", 3)
    timer = StepTimer()
    timer.begin("net", "r1")
    for mb in range(5):
        timer.work("net", "r1", "v", "fwd", mb, timer.now(), timer.now())
        timer.received(Hop("net", "r1", mb, "fwd", "v", 0, None, "pb"), 8)
    timer.work("net", "other-run", "v", "fwd", 0, timer.now(), timer.now())  # not the current run: ignored
    timing_ = timer.finish("net")
    assert timing_ is not None and len(timing_.work) == 3 and len(timing_.received) == 3 and timing_.truncated
    assert timer.finish("net") is None  # handed over once
    assert [w.micro_batch for w in timing_.work] == [0, 1, 2]
