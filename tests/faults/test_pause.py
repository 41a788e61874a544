"""Volunteers pausing and resuming their PNodes mid-session change nothing in the result.

Real `dcnr orchestrator` and `dcnr pnode` processes on loopback (`dcnr.cluster.LocalCluster`, 1 s
heartbeats) train the tiny LM; `dcnr pnode pause` on one PNode's machine moves its VNodes away (the
session restores them elsewhere from its last checkpoint); later that PNode resumes and the other pauses,
so the resumed one gets the work again. The session completes with final parameters bit-identical to an
uninterrupted LocalExecutor run, and the status files and `dcnr pnode list` account for what each did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tiny_lm_sessions
import torch
from tiny_lm_sessions import NETWORK, TEXTS, assert_final_parameters, reference_parameters
from tokenizers import Tokenizer
from typer.testing import CliRunner

from dcnr.cli.main import app
from dcnr.cluster import LocalCluster
from dcnr.data.vocab import train_vocabulary

STEPS, EVERY, BATCH, MICRO, SEED = 40, 5, 4, 2, 9
# steps at whose first report the test pauses p0, then resumes it and pauses p1: early, so that each lands well
# before the session ends however slowly this machine runs (steps slow down with the rest)
FIRST, SECOND = 3, 12
TIMEOUT = 300.0


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, 2, heartbeat_interval=1.0, step_timeout=60)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def vocab() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


@pytest.fixture(scope="module")
def reference(vocab: Tokenizer) -> dict[str, torch.Tensor]:
    """The uninterrupted run, in one process."""
    return reference_parameters(vocab, STEPS, BATCH, MICRO, SEED)


def dcnr_cli(fleet: LocalCluster, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"DCNR_CONFIG": str(fleet.admin_config), "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def on_machine_of(fleet: LocalCluster, name: str, command: str) -> str:
    """`dcnr pnode COMMAND` run on PNode `name`'s machine (its state directory); its output."""
    code, out, err = dcnr_cli(fleet, "pnode", command, "--state-dir", str(fleet.pnode_dir(name)))
    assert code == 0, err
    return out


def status(fleet: LocalCluster, name: str) -> dict[str, Any]:
    """`dcnr pnode status --json` on PNode `name`'s machine."""
    code, out, err = dcnr_cli(fleet, "pnode", "status", "--json", "--state-dir", str(fleet.pnode_dir(name)))
    assert code == 0, err
    return dict(json.loads(out))


def pnodes(fleet: LocalCluster) -> dict[str, dict[str, Any]]:
    code, out, err = dcnr_cli(fleet, "pnode", "list", "--json")
    assert code == 0, err
    return {fleet.name_of(row["id"]): row for row in json.loads(out)}


def follow(fleet: LocalCluster, session: str, actions: dict[int, Callable[[], None]]) -> None:
    tiny_lm_sessions.follow(fleet, session, actions, TIMEOUT)


@pytest.mark.slow
def test_pausing_and_resuming_pnodes_mid_session_changes_nothing_in_the_result(
        fleet: LocalCluster, vocab: Tokenizer, reference: dict[str, torch.Tensor]) -> None:
    c = fleet.start()
    c.upload_vocabulary("v", vocab.to_str())
    c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
    c.create_network(NETWORK, name="lm")
    session = c.create_session("lm", "d", STEPS, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
                               checkpoint_every=EVERY, start=True).id

    def pause_p0() -> None:
        assert pnodes(fleet)["p0"]["vnodes"], "p0 had no work to hand back"
        assert "paused" in on_machine_of(fleet, "p0", "pause")
        assert status(fleet, "p0")["vnodes"] == []  # handed back before `pause` returned
        row = pnodes(fleet)["p0"]
        assert (row["state"], row["paused"], row["vnodes"]) == ("alive", True, [])  # still registered

    def resume_p0_pause_p1() -> None:
        assert "resumed" in on_machine_of(fleet, "p0", "resume")
        assert "paused" in on_machine_of(fleet, "p1", "pause")

    actions = {FIRST: pause_p0, SECOND: resume_p0_pause_p1}
    follow(fleet, session, actions)
    assert not actions, "the session completed before every pause and resume"

    assert_final_parameters(fleet, reference, "p0 paused, resumed, p1 paused")

    rows = pnodes(fleet)
    assert rows["p0"]["vnodes"] and not rows["p0"]["paused"]  # the resumed PNode took the work again
    assert (rows["p1"]["vnodes"], rows["p1"]["paused"]) == ([], True)
    assert all(r["compute_seconds"] > 0 for r in rows.values()), rows
    code, out, _ = dcnr_cli(fleet, "pnode", "list")
    assert code == 0 and "paused" in out and "compute" in out
    fleet.wait_for(lambda: status(fleet, "p0")["steps"] >= 1, "p0's status file catching up", timeout=30)
    mine = status(fleet, "p0")
    assert mine["running"] and mine["state"] == "active" and mine["vnodes"]
    assert mine["steps"] > 0 and mine["micro_batches"] >= mine["steps"] * MICRO
    assert mine["compute_seconds"] > 0 and mine["bytes_in"] > 0 and mine["bytes_out"] > 0
    other = status(fleet, "p1")
    assert (other["state"], other["paused"], other["vnodes"]) == ("paused", True, [])
    assert other["paused_since"] and other["steps"] > 0
