"""The `dcnr` client commands against real `dcnr orchestrator` and `dcnr pnode` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dcnr.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "networks" / "tiny_lm.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "dcnr.cli.main", *args], stdout=f, stderr=subprocess.STDOUT)


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.address = f"127.0.0.1:{free_port()}"
        self.orch = spawn("orchestrator", "--port", self.address.split(":")[1], "--state-dir", str(tmp / "state"),
                          "--heartbeat-interval", "1", "--log-format", "json", log=tmp / "orch.log")
        self.pnode = spawn("pnode", "--orchestrator", self.address, "--id", "worker", "--threads", "1",
                           "--memory-budget", "2GiB", log=tmp / "pnode.log")

    def run(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(args), env={"DCNR_ORCHESTRATOR": self.address, "COLUMNS": "200"})
        return result.exit_code, result.stdout, result.stderr

    def stop(self) -> None:
        for p in (self.pnode, self.orch):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        deadline = time.monotonic() + 90
        while True:
            code, out, _ = f.run("pnode", "list", "--json")
            if code == 0 and json.loads(out):
                break
            assert time.monotonic() < deadline, (f.tmp / "pnode.log").read_text()
            time.sleep(0.3)
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("corpus")
    paths = []
    for i in range(3):
        p = d / f"part{i}.txt"
        p.write_text("".join(f"def f{j}(x):\n    return x * {j} + {i}\n" for j in range(400)))
        paths.append(p)
    return paths


def test_pnode_list_json(fleet: Fleet) -> None:
    code, out, _ = fleet.run("pnode", "list", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["id"] == "worker" and row["state"] == "alive" and row["address"].startswith("127.0.0.1:")
    assert row["hardware"]["memory_budget_bytes"] == 2 * 2**30 and row["hardware"]["threads"] == 1
    assert isinstance(row["vnodes"], list)


def test_network_create_prints_the_name_and_bad_files_get_cli_messages(fleet: Fleet, tmp_path: Path) -> None:
    code, out, err = fleet.run("network", "create", str(TINY), "--name", "lm")
    assert (code, out) == (0, "lm\n"), err
    code, _, err = fleet.run("network", "create", str(TINY), "--name", "lm")
    assert code == 2 and "already exists" in err and "Traceback" not in err
    bad = tmp_path / "bad.yml"
    bad.write_text("nodes:\n  - {id: a, type: lienar, config: {in_dim: 4, out_dim: 4}}\n")
    code, _, err = fleet.run("network", "create", str(bad))
    local = CliRunner().invoke(app, ["network", "validate", str(bad)])
    assert code == 2 and local.exit_code == 2
    assert err == local.stderr  # the orchestrator answers with the CLI's own messages
    code, out, _ = fleet.run("network", "list", "--json")
    assert [n["name"] for n in json.loads(out)] == ["lm"]


def test_data_session_listen_and_chat(fleet: Fleet, corpus: list[Path]) -> None:
    code, out, err = fleet.run("vocab", "train", "--name", "code", "--vocab-size", "2048", "--files",
                               *map(str, corpus))
    assert (code, out) == (0, "code\n"), err
    code, out, err = fleet.run("dataset", "create", "--name", "fns", "--vocab", "code", "--files", *map(str, corpus))
    assert (code, out) == (0, "fns\n"), err
    code, out, _ = fleet.run("dataset", "split", "fns", "--validation-fraction", "0.2")
    assert code == 0 and "validation" in out
    code, out, _ = fleet.run("dataset", "explore", "fns", "--sample-tokens", "12", "--json")
    doc = json.loads(out)
    assert doc["validation_tokens"] > 0.19 * doc["tokens"] and doc["sample"].startswith("def f0(x)")
    code, out, _ = fleet.run("network", "create", str(TINY), "--name", "chatty")
    code, out, err = fleet.run("session", "create", "--network", "chatty", "--dataset", "fns", "--steps", "3",
                               "--batch-size", "4", "--micro-batches", "2", "--seed", "1")
    assert code == 0, err
    session = out.strip()
    assert len(session) == 12
    code, out, _ = fleet.run("session", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[session]["state"] == "created" and rows[session]["steps"] == 3
    assert fleet.run("session", "start", session)[0] == 0
    code, out, err = fleet.run("session", "listen", session, "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["step"] for e in events] == [1, 2, 3] and events[-1]["state"] == "completed"
    assert all(e["loss"] > 0 and e["tokens_per_second"] > 0 for e in events)
    assert "lm_head_lr" in events[-1]["learning_rates"]
    code, out, _ = fleet.run("session", "list", "--json")
    assert {r["id"]: r for r in json.loads(out)}[session]["state"] == "completed"
    code, out, err = fleet.run("chat", "chatty", "--vocab", "code", "--prompt", "def", "--max-tokens", "5")
    assert code == 0 and out.endswith("\n") and len(out) > 1, err
    code, out2, err = fleet.run("chat", "chatty", "--prompt", "def", "--max-tokens", "5")  # its session's vocabulary
    assert (code, out2) == (0, out), err  # same seed, same vocabulary: the same text
    code, out, _ = fleet.run("evaluate", "chatty", "--dataset", "fns", "--batches", "1", "--batch-size", "2", "--json")
    assert code == 0 and json.loads(out)["ce_loss"] > 0
    code, out, _ = fleet.run("pnode", "list", "--json")
    assert any(v.startswith("chatty/") for v in json.loads(out)[0]["vnodes"])
    assert fleet.run("session", "delete", session)[0] == 0
    code, _, err = fleet.run("session", "start", session)
    assert code == 2 and f"unknown session '{session}'" in err


def test_unknown_names_are_one_line_user_errors(fleet: Fleet) -> None:
    for args in (("network", "show", "ghost"), ("dataset", "explore", "ghost"), ("session", "listen", "ghost"),
                 ("chat", "ghost", "--vocab", "ghost", "--prompt", "x")):
        code, _, err = fleet.run(*args)
        assert code == 2 and "ghost" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, args


def test_unreachable_orchestrator_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["network", "list"], env={"DCNR_ORCHESTRATOR": f"127.0.0.1:{free_port()}"})
    assert result.exit_code == 1
    assert "cannot reach the server" in result.stderr and "DCNR_ORCHESTRATOR" in result.stderr


def test_sigterm_unregisters_the_pnode(tmp_path: Path, fleet: Fleet) -> None:
    extra = spawn("pnode", "--orchestrator", fleet.address, "--id", "brief", "--threads", "1", log=tmp_path / "p.log")
    try:
        deadline = time.monotonic() + 60
        while "brief" not in fleet.run("pnode", "list")[1]:
            assert time.monotonic() < deadline and extra.poll() is None, (tmp_path / "p.log").read_text()
            time.sleep(0.2)
        extra.send_signal(signal.SIGTERM)
        assert extra.wait(30) == 0
        _, out, _ = fleet.run("pnode", "list", "--json")
        assert [r["id"] for r in json.loads(out)] == ["worker"]
    finally:
        if extra.poll() is None:
            extra.kill()


def test_orchestrator_logs_are_json_lines(fleet: Fleet) -> None:
    lines = [json.loads(line) for line in (fleet.tmp / "orch.log").read_text().splitlines() if line.startswith("{")]
    assert any(rec.get("pnode") == "worker" and "registered" in rec["msg"] for rec in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(rec) for rec in lines)


os.environ.setdefault("COLUMNS", "200")
