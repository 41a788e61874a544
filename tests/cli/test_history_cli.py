"""`dcnr session history`, `dcnr session listen --from-step` and `dcnr top` against a real orchestrator (PNodes in
this process)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from tiny_lm_sessions import NETWORK, TEXTS
from typer.testing import CliRunner

from dcnr.cli.main import app
from dcnr.client import StepEvent
from dcnr.cluster import LocalCluster
from dcnr.data.vocab import train_vocabulary

STEPS = 3


def run(cluster: LocalCluster, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"DCNR_CONFIG": str(cluster.admin_config), "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str, list[StepEvent]]]:
    """A cluster, a finished session and the events it reported."""
    with LocalCluster(tmp_path_factory.mktemp("history"), 2, in_process=True) as cluster:
        c = cluster.client
        c.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
        c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
        c.create_network(NETWORK, name="lm")
        session = c.create_session("lm", "d", STEPS, batch_size=4, micro_batches=2, start=True).id
        events = list(c.listen_session(session, timeout=300))
        assert events[-1].state == "completed"
        yield cluster, session, events


def test_session_history_as_csv_json_and_a_table(trained: tuple[LocalCluster, str, list[StepEvent]]) -> None:
    cluster, session, events = trained
    code, out, err = run(cluster, "session", "history", session, "--csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["step", "at", "loss", "held_out_loss", "tokens_per_second", "duration_seconds",
                             "lm_head_lr"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for row, ev in zip(rows, events, strict=True):
        assert float(row["loss"]) == ev.loss and float(row["at"]) == ev.at  # every digit kept
        assert float(row["tokens_per_second"]) == ev.tokens_per_second
        assert float(row["lm_head_lr"]) == ev.learning_rates["lm_head_lr"] and row["held_out_loss"] == ""
    code, out, _ = run(cluster, "session", "history", session, "--json", "--from-step", "2")
    assert code == 0 and [e["step"] for e in json.loads(out)] == [2, 3]
    code, out, _ = run(cluster, "session", "history", session)
    assert code == 0 and f"session {session}" in out and "lm_head_lr" in out and f"{events[-1].loss:.4f}" in out
    code, _, err = run(cluster, "session", "history", session, "--csv", "--json")
    assert code == 2 and "exclude" in err
    code, _, err = run(cluster, "session", "history", "ghost")
    assert code == 2 and "unknown session 'ghost'" in err


def test_an_evaluation_on_the_session_dataset_is_its_held_out_loss(
        trained: tuple[LocalCluster, str, list[StepEvent]]) -> None:
    cluster, session, _ = trained
    held_out = cluster.client.validate("lm", "d", batches=1, batch_size=2)["ce_loss"]
    history = cluster.client.session_history(session)
    assert [e.held_out_loss for e in history] == [None, None, held_out]


def test_listen_from_a_step_replays_then_ends_with_the_session(
        trained: tuple[LocalCluster, str, list[StepEvent]]) -> None:
    cluster, session, events = trained
    code, out, err = run(cluster, "session", "listen", session, "--from-step", "2", "--json")
    assert code == 0, err
    replayed = [json.loads(line) for line in out.splitlines()]
    assert [e["step"] for e in replayed] == [2, 3] and replayed[-1]["state"] == "completed"
    assert [e["loss"] for e in replayed] == [ev.loss for ev in events[1:]]
    code, out, _ = run(cluster, "session", "listen", session, "--from-step", "1")
    assert code == 0 and out.startswith("step 1/3 loss") and out.count("\n") == STEPS


def test_top_prints_one_frame(trained: tuple[LocalCluster, str, list[StepEvent]]) -> None:
    cluster, session, events = trained
    code, out, err = run(cluster, "top", "--once")
    assert code == 0, err
    assert "PNodes 2/2 alive" in out and "throughput" in out
    for name, pnode in cluster.ids.items():
        assert name in out and pnode in out
    assert out.count("direct") == 2
    line = next(line for line in out.splitlines() if session in line)
    assert "lm" in line and "completed" in line and f"{STEPS}/{STEPS}" in line and f"{events[-1].loss:.4f}" in line
    code, _, err = run(cluster, "top", "--interval", "0.01")
    assert code == 2 and "--interval" in err
