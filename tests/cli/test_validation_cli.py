"""The standing of PNodes and the validation log through `dcnr`: `pnode list`, `trust`, `release`,
`validation list` and `session create --validation`, against an orchestrator running in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dcnr.cli import serve
from dcnr.cli.main import app
from dcnr.client import Client
from dcnr.errors import InvalidArgument
from dcnr.orchestrator import app as app_module
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.store import ValidationEvent
from dcnr.security.config import ClientConfig
from dcnr.transport.messages import Membership

TINY = Path(__file__).resolve().parents[2] / "examples" / "networks" / "tiny_lm.yml"
HARDWARE = {"cpu_cores": 2, "memory_bytes": 8 * 2**30, "memory_budget_bytes": 2 * 2**30, "device": "cpu",
            "threads": 1}


@pytest.fixture(scope="module")
def orch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    """An orchestrator with two registered PNodes (nothing runs on them: they only need to be known)."""
    o = Orchestrator(tmp_path_factory.mktemp("orch") / "state", heartbeat_interval=3600)
    o.start("127.0.0.1:0")
    for i, pid in enumerate(("pn-honest", "pn-cheat")):
        o.fleet.register(Membership(pid, f"127.0.0.1:{9001 + i}", dict(HARDWARE), "2.0.0", name=pid[3:]))
    yield o
    o.stop(grace=0.5)


def run(orch: Orchestrator, *args: str, config: Path | None = None, token: str = "") -> tuple[int, str, str]:
    """`dcnr ARGS` as the operator (or with `config` / `token`): exit code, stdout, stderr."""
    env = {"DCNR_CONFIG": str(config or orch.admin_config), "COLUMNS": "250", "DCNR_TOKEN": token}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def pnodes(orch: Orchestrator) -> dict[str, dict[str, Any]]:
    code, out, err = run(orch, "pnode", "list", "--json")
    assert code == 0, err
    return {r["id"]: r for r in json.loads(out)}


def one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(f in lines[0] for f in fragments), err


def test_trust_and_revoke(orch: Orchestrator) -> None:
    row = pnodes(orch)["pn-honest"]
    assert (row["trusted"], row["charges"], row["quarantined_until"], row["state"]) == (False, 0, None, "alive")
    code, out, err = run(orch, "pnode", "trust", "pn-honest")
    assert (code, out) == (0, "PNode pn-honest trusted\n"), err
    assert pnodes(orch)["pn-honest"]["trusted"] is True
    code, out, _ = run(orch, "pnode", "list")
    line = next(ln for ln in out.splitlines() if "pn-honest" in ln)
    assert " yes " in line and " alive " in line
    code, out, err = run(orch, "pnode", "trust", "pn-honest", "--revoke")
    assert (code, out) == (0, "PNode pn-honest no longer trusted\n"), err
    assert pnodes(orch)["pn-honest"]["trusted"] is False
    code, _, err = run(orch, "pnode", "trust", "pn-typo")
    assert code == 2
    one_line_error(err, "unknown PNode 'pn-typo'")


def test_a_quarantined_pnode_is_listed_as_such_until_released(orch: Orchestrator) -> None:
    assert orch.standings.charge("pn-cheat", "mismatch at step 3")
    orch.fleet.quarantine("pn-cheat")
    row = pnodes(orch)["pn-cheat"]
    assert (row["state"], row["charges"], row["quarantine_reason"]) == ("alive", 1, "mismatch at step 3")
    assert row["quarantined_until"] is not None and row["quarantined_until"] > row["last_seen"]
    code, out, _ = run(orch, "pnode", "list")
    line = next(ln for ln in out.splitlines() if "pn-cheat" in ln)
    assert "quarantined until" in line and "(mismatch at step 3)" in line and " no " in line
    assert "quarantined" not in next(ln for ln in out.splitlines() if "pn-honest" in ln)
    code, out, err = run(orch, "pnode", "release", "pn-cheat")
    assert (code, out) == (0, "PNode pn-cheat released from quarantine\n"), err
    row = pnodes(orch)["pn-cheat"]
    assert (row["charges"], row["quarantined_until"], row["quarantine_reason"]) == (0, None, "")
    code, _, err = run(orch, "pnode", "release", "pn-cheat")
    assert code == 2
    one_line_error(err, "PNode pn-cheat is not quarantined")


def test_a_standing_outlives_the_pnode_leaving(orch: Orchestrator) -> None:
    orch.fleet.register(Membership("pn-leaver", "127.0.0.1:9009", dict(HARDWARE), "2.0.0"))
    assert orch.standings.charge("pn-leaver", "mismatch")
    assert orch.fleet.unregister("pn-leaver")
    assert "pn-leaver" not in pnodes(orch)  # listings show registered PNodes
    with Client(config=orch.admin_config) as c:
        info = c.release_pnode("pn-leaver")  # known by its standing
        assert (info.id, info.state, info.charges, info.quarantined_until) == ("pn-leaver", "unregistered", 0, 0.0)
        assert c.trust_pnode("pn-leaver").trusted
    assert orch.standings.trusted("pn-leaver")


def test_validation_list_table_json_and_filters(orch: Orchestrator) -> None:
    for revoke in ((), ("--revoke",)):  # operators' changes are logged too
        assert run(orch, "pnode", "trust", "pn-honest", *revoke)[0] == 0
    orch.standings.record(ValidationEvent("lm", "s-one", 4, "fc1/mb0", "pn-cheat", "pn-honest", "pn-ref", "fail",
                                          "max |Δ| 0.25"))
    orch.standings.record(ValidationEvent("lm", "s-two", 5, "fc2/mb1", "pn-honest", "pn-cheat", "", "pass", ""))
    orch.standings.record(ValidationEvent("other", "s-three", 1, "ln/mb0", "pn-honest", "pn-cheat", "", "pass", ""))
    code, out, err = run(orch, "validation", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)  # oldest first
    fail = next(r for r in rows if r["verdict"] == "fail")
    assert {k: fail[k] for k in ("network", "session", "step", "unit", "accused", "verifier", "referee", "detail")} \
        == {"network": "lm", "session": "s-one", "step": 4, "unit": "fc1/mb0", "accused": "pn-cheat",
            "verifier": "pn-honest", "referee": "pn-ref", "detail": "max |Δ| 0.25"}
    assert {"trusted", "untrusted"} <= {r["verdict"] for r in rows}
    code, out, _ = run(orch, "validation", "list", "s-two", "--json")
    assert [(r["session"], r["verdict"]) for r in json.loads(out)] == [("s-two", "pass")]
    code, out, _ = run(orch, "validation", "list", "--network", "lm", "--json")
    assert [r["session"] for r in json.loads(out)] == ["s-one", "s-two"]
    code, out, _ = run(orch, "validation", "list", "--limit", "1", "--json")
    assert [r["session"] for r in json.loads(out)] == ["s-three"]  # the newest
    code, out, err = run(orch, "validation", "list", "--network", "lm")
    assert code == 0, err
    assert all(h in out for h in ("time", "session", "step", "unit", "accused", "verifier", "referee", "verdict",
                                  "detail"))
    line = next(ln for ln in out.splitlines() if "s-one" in ln)
    assert all(v in line for v in ("fc1/mb0", "pn-cheat", "pn-honest", "pn-ref", "fail", "max |Δ| 0.25", " 4 "))
    assert "s-three" not in out
    code, _, err = run(orch, "validation", "list", "--limit", "0")
    assert code == 2
    one_line_error(err, "limit must be at least 1")


def test_who_may_change_and_read_standings(orch: Orchestrator, tmp_path: Path) -> None:
    researcher = orch.tokens.create("val-researcher", "researcher")
    code, _, err = run(orch, "pnode", "trust", "pn-honest", token=researcher)
    assert code == 2
    one_line_error(err, "TrustPNode is not allowed for role researcher")
    code, _, err = run(orch, "pnode", "release", "pn-cheat", token=researcher)
    assert code == 2
    one_line_error(err, "ReleasePNode is not allowed for role researcher")
    assert run(orch, "validation", "list", "--json", token=researcher)[0] == 0
    anonymous = tmp_path / "anonymous.yaml"
    ClientConfig(f"127.0.0.1:{orch.port}", orch.ca.cert_pem.decode()).save(anonymous)
    code, out, err = run(orch, "validation", "list", "--json", config=anonymous)  # a public read
    assert code == 0 and json.loads(out), err


def test_session_create_takes_a_validation_policy(orch: Orchestrator) -> None:
    for bad in ("bogus", "sample:0", "sample:2", "sample:x"):
        code, out, err = run(orch, "session", "create", "--network", "lm", "--dataset", "d", "--steps", "1",
                             "--validation", bad)
        assert code == 2 and out == "", bad
        one_line_error(err, "validation must be off, full or sample:P", repr(bad))
    with Client(config=orch.admin_config) as c:
        with pytest.raises(InvalidArgument, match="validation must be"):
            c.create_session("lm", "d", 1, validation="half")
        texts = [f"def f{i}(x):\n    return x * {i}\n" * 20 for i in range(20)]
        c.train_vocabulary("v", texts, vocab_size=300)
        c.create_dataset("d", "v", texts)
        c.create_network(TINY, name="lm")
    code, out, err = run(orch, "session", "create", "--network", "lm", "--dataset", "d", "--steps", "1",
                         "--validation", "SAMPLE:0.25")
    assert code == 0, err
    chosen = out.strip()
    code, out, err = run(orch, "session", "create", "--network", "lm", "--dataset", "d", "--steps", "1")
    default = out.strip()
    code, out, _ = run(orch, "session", "list", "--json")
    policies = {r["id"]: r["validation"] for r in json.loads(out)}
    assert policies == {chosen: "sample:0.25", default: ""}  # stored as parsed; "" takes the network's default
    code, out, _ = run(orch, "session", "list")
    assert "sample:0.25" in next(ln for ln in out.splitlines() if chosen in ln)
    assert "default" in next(ln for ln in out.splitlines() if default in ln)
    code, out, _ = run(orch, "session", "create", "--help")
    assert all(w in " ".join(out.split()) for w in ("off", "sample:P", "full", "sample:0.05 unless the network"))


def test_the_quarantine_options_reach_the_orchestrator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made: dict[str, Any] = {}

    def orchestrator(state_dir: Path, **options: Any) -> None:
        made.update(options)
        raise ValueError("not started in this test")

    monkeypatch.setattr(serve, "_stop_on_signals", threading.Event)  # leave this process's signals alone
    monkeypatch.setattr(serve.logs, "configure", lambda fmt: None)
    monkeypatch.setattr(app_module, "Orchestrator", orchestrator)
    res = CliRunner().invoke(app, ["orchestrator", "--state-dir", str(tmp_path), "--quarantine-after", "3",
                                   "--cooling-off-hours", "0.5"])
    assert res.exit_code == 2 and "not started in this test" in res.output
    assert (made["quarantine_after"], made["cooling_off"]) == (3, 1800.0)
    made.clear()
    for option in ("--quarantine-after", "--cooling-off-hours"):
        res = CliRunner().invoke(app, ["orchestrator", "--state-dir", str(tmp_path), option, "0"])
        assert res.exit_code == 2 and made == {}, res.output
        one_line_error(res.stderr, option)
