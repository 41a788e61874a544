"""The `dcnr` client commands against real `dcnr orchestrator` and `dcnr pnode` processes."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcnr.cli.main import app
from dcnr.client import Client
from dcnr.cluster import ORCHESTRATOR, LocalCluster, free_port
from dcnr.errors import DcnrError, InvalidArgument, NetworkError, NotFound, Unavailable
from dcnr.security.config import ClientConfig
from dcnr.security.pki import CertificateAuthority

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "networks" / "tiny_lm.yml"


def run(cluster: LocalCluster, *args: str) -> tuple[int, str, str]:
    """`dcnr ARGS` against the cluster: exit code, stdout, stderr."""
    result = CliRunner().invoke(app, list(args), env={"DCNR_CONFIG": str(cluster.admin_config), "COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A `dcnr orchestrator` process (JSON logs) and one `dcnr pnode` process named worker."""
    with LocalCluster(tmp_path_factory.mktemp("fleet"), ["worker"], orchestrator_args=["--log-format", "json"],
                      pnode_args=["--memory-budget", "2GiB"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("corpus")
    paths = []
    for i in range(3):
        p = d / f"part{i}.txt"
        p.write_text("".join(f"def f{j}(x):\n    return x * {j} + {i}\n" for j in range(400)))
        paths.append(p)
    return paths


def test_pnode_list_json(fleet: LocalCluster) -> None:
    code, out, _ = run(fleet, "pnode", "list", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["id"], row["name"], row["state"]) == (fleet.ids["worker"], "worker", "alive")
    assert row["address"].startswith("127.0.0.1:")
    assert row["hardware"]["memory_budget_bytes"] == 2 * 2**30 and row["hardware"]["threads"] == 1
    assert isinstance(row["vnodes"], list)


def test_network_create_prints_the_name_and_bad_files_get_cli_messages(fleet: LocalCluster, tmp_path: Path) -> None:
    code, out, err = run(fleet, "network", "create", str(TINY), "--name", "lm")
    assert (code, out) == (0, "lm\n"), err
    code, _, err = run(fleet, "network", "create", str(TINY), "--name", "lm")
    assert code == 2 and "already exists" in err and "Traceback" not in err
    bad = tmp_path / "bad.yml"
    bad.write_text("nodes:\n  - {id: a, type: lienar, config: {in_dim: 4, out_dim: 4}}\n")
    code, _, err = run(fleet, "network", "create", str(bad))
    local = CliRunner().invoke(app, ["network", "validate", str(bad)])
    assert code == 2 and local.exit_code == 2
    assert err == local.stderr  # the orchestrator answers with the CLI's own messages
    code, out, _ = run(fleet, "network", "list", "--json")
    assert [n["name"] for n in json.loads(out)] == ["lm"]


def test_data_session_listen_and_chat(fleet: LocalCluster, corpus: list[Path]) -> None:
    code, out, err = run(fleet, "vocab", "train", "--name", "code", "--vocab-size", "2048", "--files",
                               *map(str, corpus))
    assert (code, out) == (0, "code\n"), err
    code, out, err = run(fleet, "dataset", "create", "--name", "fns", "--vocab", "code", "--files", *map(str, corpus))
    assert (code, out) == (0, "fns\n"), err
    code, out, _ = run(fleet, "dataset", "split", "fns", "--validation-fraction", "0.2")
    assert code == 0 and "validation" in out
    code, out, _ = run(fleet, "dataset", "explore", "fns", "--sample-tokens", "12", "--json")
    doc = json.loads(out)
    assert doc["validation_tokens"] > 0.19 * doc["tokens"] and doc["sample"].startswith("def f0(x)")
    code, out, _ = run(fleet, "network", "create", str(TINY), "--name", "chatty")
    code, out, err = run(fleet, "session", "create", "--network", "chatty", "--dataset", "fns", "--steps", "3",
                               "--batch-size", "4", "--micro-batches", "2", "--seed", "1")
    assert code == 0, err
    session = out.strip()
    assert len(session) == 12
    code, out, _ = run(fleet, "session", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[session]["state"] == "created" and rows[session]["steps"] == 3
    assert run(fleet, "session", "start", session)[0] == 0
    code, out, err = run(fleet, "session", "listen", session, "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["step"] for e in events] == [1, 2, 3] and events[-1]["state"] == "completed"
    assert all(e["loss"] > 0 and e["tokens_per_second"] > 0 for e in events)
    assert "lm_head_lr" in events[-1]["learning_rates"]
    code, out, _ = run(fleet, "session", "list", "--json")
    assert {r["id"]: r for r in json.loads(out)}[session]["state"] == "completed"
    code, out, err = run(fleet, "chat", "chatty", "--vocab", "code", "--prompt", "def", "--max-tokens", "5")
    assert code == 0 and out.endswith("\n") and len(out) > 1, err
    code, out2, err = run(fleet, "chat", "chatty", "--prompt", "def", "--max-tokens", "5")  # its session's vocabulary
    assert (code, out2) == (0, out), err  # same seed, same vocabulary: the same text
    code, out, _ = run(fleet, "evaluate", "chatty", "--dataset", "fns", "--batches", "1", "--batch-size", "2", "--json")
    assert code == 0 and json.loads(out)["ce_loss"] > 0
    code, out, _ = run(fleet, "pnode", "list", "--json")
    assert any(v.startswith("chatty/") for v in json.loads(out)[0]["vnodes"])
    assert run(fleet, "session", "delete", session)[0] == 0
    code, _, err = run(fleet, "session", "start", session)
    assert code == 2 and f"unknown session '{session}'" in err


def test_unknown_names_are_one_line_user_errors(fleet: LocalCluster) -> None:
    for args in (("network", "show", "ghost"), ("dataset", "explore", "ghost"), ("session", "listen", "ghost"),
                 ("chat", "ghost", "--vocab", "ghost", "--prompt", "x")):
        code, _, err = run(fleet, *args)
        assert code == 2 and "ghost" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, args


def test_unreachable_orchestrator_is_a_clear_error(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    ClientConfig(address, CertificateAuthority.load_or_create(tmp_path).cert_pem.decode()).save(config)
    result = CliRunner().invoke(app, ["network", "list"], env={"DCNR_ORCHESTRATOR": address,
                                                               "DCNR_CONFIG": str(config)})
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"cannot reach the orchestrator at {address}" in result.stderr and "DCNR_ORCHESTRATOR" in result.stderr


def test_sigterm_unregisters_the_pnode(fleet: LocalCluster) -> None:
    fleet.start_pnode("brief")
    try:
        fleet.wait_for_pnodes(["brief"], timeout=60)
        fleet.signal("brief", signal.SIGTERM)
        assert fleet.procs["brief"].wait(30) == 0
        _, out, _ = run(fleet, "pnode", "list", "--json")
        assert [r["name"] for r in json.loads(out)] == ["worker"]
    finally:
        if fleet.procs["brief"].poll() is None:
            fleet.kill("brief")


def test_orchestrator_logs_are_json_lines(fleet: LocalCluster) -> None:
    lines = [json.loads(line) for line in fleet.log_path(ORCHESTRATOR).read_text().splitlines() if line.startswith("{")]
    assert any(rec.get("pnode") == fleet.ids["worker"] and "registered" in rec["msg"] for rec in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(rec) for rec in lines)




# -- dcnr.Client against the same processes, checked against in-process references ----------------

MLP = """
name: mlp
seed: 3
nodes:
  - {id: fc1, type: linear, config: {in_dim: 4, out_dim: 8, optimizer: sgd, lr: 0.1}}
  - {id: act, type: relu}
  - {id: fc2, type: linear, config: {in_dim: 8, out_dim: 2, optimizer: sgd, lr: 0.1}}
  - {id: loss, type: cost, config: {cost_function: mse}}
edges:
  - {from: fc1, to: act}
  - {from: act, to: fc2}
  - {from: fc2, to: loss, to_slot: 0}
inputs: [{name: x, node_id: fc1, slot_id: 0}, {name: y, node_id: loss, slot_id: 1}]
outputs: [{name: prediction, node_id: fc2, slot_id: 0}]
costs: [{name: mse, node_id: loss, slot_id: 0}]
"""


def test_client_forward_train_export_import_match_the_local_executor(fleet: LocalCluster, tmp_path: Path) -> None:
    """The cluster, driven through dcnr.Client, computes what LocalExecutor computes in this process."""
    from safetensors.torch import load_file

    import dcnr

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g), torch.randn(6, 2, generator=g)
    ex = dcnr.LocalExecutor(dcnr.parse_network(MLP))
    with Client(config=fleet.admin_config) as c:
        info = c.create_network(MLP)
        assert (info.name, info.vnodes, info.step) == ("mlp", 4, 0)
        got = c.forward("mlp", {"x": x}, ["prediction"])
        torch.testing.assert_close(got["prediction"], ex.forward({"x": x}, ["prediction"])["prediction"])
        for step in (1, 2):
            result = c.train_step("mlp", {"x": x, "y": y}, micro_batches=2)
            want = ex.train_step({"x": x, "y": y}, micro_batches=2)
            assert result.step == step and not result.skipped
            assert result.costs["mse"] == pytest.approx(want["mse"], rel=1e-6)
        path = tmp_path / "mlp.safetensors"
        size = c.export_network("mlp", path, progress=(seen := []).append)
        assert size == path.stat().st_size == sum(seen) and not list(tmp_path.glob(".*.tmp"))
        exported = {k: v for k, v in load_file(path).items() if not k.startswith("optim/")}
        assert exported.keys() == ex.parameters().keys()
        for k, v in ex.parameters().items():
            torch.testing.assert_close(exported[k], v)
        copy = c.import_network(path, "mlp-copy")
        assert (copy.name, copy.step) == ("mlp-copy", 2)
        torch.testing.assert_close(c.forward("mlp-copy", {"x": x})["prediction"], ex.forward({"x": x})["prediction"])
        placed = c.inspect_network("mlp-copy")
        assert {p.vnode for p in placed.placements} == {"fc1", "act", "fc2", "loss"}
        assert {p.pnode for p in placed.placements} == {fleet.ids["worker"]}
        assert c.delete_network("mlp-copy") and c.delete_network("mlp")


def test_client_dataset_upload_in_pieces_matches_local_tokenization(fleet: LocalCluster, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents cut into pieces of a few characters (and files from a folder) tokenize exactly as the
    whole texts do here; progress counts every byte."""
    from tokenizers import Tokenizer

    import dcnr.client
    from dcnr.data.dataset import TokenDataset

    texts = [f"def g{i}(y):\n    return y - {i}  # é\n" * (i + 1) for i in range(12)]
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, t in enumerate(texts[6:]):
        (folder / f"{i:02d}.py").write_text(t, encoding="utf-8")
    monkeypatch.setattr(dcnr.client, "UPLOAD_PIECE", 5)
    with Client(config=fleet.admin_config) as c:
        assert 259 < c.train_vocabulary("pieces-vocab", texts, vocab_size=300).vocab_size <= 300
        vocab = Tokenizer.from_str(c.get_vocabulary("pieces-vocab").tokenizer_json)
        sent: list[int] = []
        info = c.create_dataset("pieces", "pieces-vocab", [*texts[:6], folder], validation_fraction=0.25,
                                progress=sent.append)
        want = TokenDataset.from_texts(texts, vocab, validation_fraction=0.25)
        assert (info.tokens, info.sha256) == (len(want.tokens), want.digest)
        assert sum(sent) == sum(len(t.encode("utf-8")) for t in texts) and len(sent) == len(texts)
        assert info.validation_tokens == len(want.split("validation"))
        with pytest.raises(InvalidArgument, match="nowhere: no such file"):
            c.create_dataset("never", "pieces-vocab", [tmp_path / "nowhere"])
        assert "never" not in {d.name for d in c.list_datasets()}
        assert c.delete_dataset("pieces") and c.delete_vocabulary("pieces-vocab")


def test_client_errors_are_dcnr_error_classes(fleet: LocalCluster, tmp_path: Path) -> None:
    with Client(config=fleet.admin_config) as c:
        with pytest.raises(NotFound, match="ghost") as caught:
            c.get_network("ghost")
        assert isinstance(caught.value, KeyError)
        with pytest.raises(NetworkError) as bad:
            c.create_network("nodes:\n  - {id: a, type: lienar, config: {in_dim: 4, out_dim: 4}}\n")
        assert any("did you mean 'linear'" in line for line in bad.value.problems)
        with pytest.raises(InvalidArgument, match=r"nope\.yml"):
            c.create_network(tmp_path / "nope.yml")
    address = f"127.0.0.1:{free_port()}"
    with Client(address, timeout=10, config=fleet.admin_config) as c, pytest.raises(
            Unavailable, match=f"cannot reach the orchestrator at {address}"):
        c.health()
    with Client(config=fleet.admin_config) as c:
        assert c.health().status == "serving"


def test_a_pnode_that_dies_at_start_fails_the_cluster_start_clearly(tmp_path: Path) -> None:
    """`LocalCluster.start` names the process and the end of its log, and stops what it started."""
    def broken(address: str, name: str) -> list[str]:
        return [sys.executable, "-c", f"print('cannot join {address}'); raise SystemExit(3)"]

    cluster = LocalCluster(tmp_path, 1, pnode_command=broken, start_timeout=120)
    with pytest.raises(DcnrError, match=r"p0 exited with code 3: cannot join 127\.0\.0\.1:\d+"):
        cluster.start()
    assert all(p.poll() is not None for p in cluster.procs.values()) and ORCHESTRATOR in cluster.procs
    assert "orchestrator serving on" in cluster.log(ORCHESTRATOR)


def test_the_orchestrator_prints_the_join_command_and_writes_admin_yaml(fleet: LocalCluster) -> None:
    """The line a volunteer runs names this orchestrator and its CA's fingerprint; the operator's client
    configuration is private to its owner."""
    log = fleet.log(ORCHESTRATOR, 100_000)
    assert f"volunteers join with: dcnr join 127.0.0.1:{fleet.port} " \
           f"--ca-fingerprint {fleet.ca_fingerprint}" in log
    assert f"client configuration (operator): {fleet.admin_config}" in log
    assert fleet.admin_config.stat().st_mode & 0o777 == 0o600
