"""The orchestrator believes a report only from the PNode it concerns: outputs and costs from the
VNode's host, completion and failures from PNodes taking part in the run."""

from __future__ import annotations

from pathlib import Path

from dcnr.orchestrator.driver import Inbox
from dcnr.orchestrator.fleet import MAX_BUDGET, Fleet
from dcnr.orchestrator.store import SQLiteStore
from dcnr.transport.memory import MemoryConnector, MemoryFabric
from dcnr.transport.messages import Membership, Report


def test_reports_count_only_from_the_pnodes_they_concern() -> None:
    inbox = Inbox()
    waiting = inbox.open("r", {"embed": "a", "loss": "b"})
    inbox.deliver("b", [Report("output", "n", "r", 0, "embed", 0, 1.0)])  # not b's VNode
    inbox.deliver("stranger", [Report("done", "n", "r", 0), Report("failed", "n", "r", 0, "loss", error="no")])
    assert waiting.outputs == {} and waiting.done == {} and waiting.error == ""
    inbox.deliver("b", [Report("output", "n", "r", 0, "loss", 0, 2.0), Report("done", "n", "r", 0)])
    inbox.deliver("a", [Report("failed", "n", "r", 0, "loss", error="cannot deliver to VNode 'loss'")])
    assert waiting.outputs == {(0, "loss", 0): 2.0} and waiting.done == {0: {"b"}}
    assert waiting.error == "cannot deliver to VNode 'loss'"  # a participant may say why the run failed


def test_a_claimed_budget_is_capped_by_the_memory_the_pnode_declares(tmp_path: Path) -> None:
    fleet = Fleet(SQLiteStore(tmp_path / "s.sqlite"), MemoryConnector(MemoryFabric()))
    fleet.register(Membership("greedy", "h:1", {"memory_budget_bytes": 2**64 - 1, "memory_bytes": 8 * 2**30}, "2.0.0"))
    fleet.register(Membership("vague", "h:2", {"memory_budget_bytes": 2**64 - 1}, "2.0.0"))
    budgets = {p.id: p.hardware["memory_budget_bytes"] for p in fleet.alive()}
    assert budgets == {"greedy": 8 * 2**30, "vague": MAX_BUDGET}
