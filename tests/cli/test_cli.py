"""The `dcnr` command: exit codes, one-line errors without tracebacks, JSON output, demo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dcnr.cli import serve
from dcnr.cli.main import app
from dcnr.orchestrator import app as app_module
from dcnr.orchestrator.limits import Limits

ROOT = Path(__file__).resolve().parents[2]
NETWORKS = ROOT / "examples" / "networks"


def dcnr(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "dcnr.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout, check=False)


def test_validate_ok() -> None:
    """A valid reference network validates with exit 0 and its VNode/parameter counts."""
    res = dcnr("network", "validate", str(NETWORKS / "topology1.yml"))
    assert res.returncode == 0, res.stderr
    assert "139 VNodes" in res.stdout and "27,176,448 parameters" in res.stdout


def test_validate_reports_every_problem_without_traceback(tmp_path: Path) -> None:
    """A bad file: exit 2, one line per problem on stderr, no traceback."""
    bad = tmp_path / "net.yml"
    bad.write_text(
        "nodes:\n"
        "  - {id: a, type: lienar, config: {in_dim: 4, out_dim: 4}}\n"
        "  - {id: head_0, type: attention_head, config: {head_dim: abc, input_dim: 4, seq_len: 4}}\n"
        "edges:\n"
        "  - {from: a, to: ghost}\n"
    )
    res = dcnr("network", "validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert any("nodes[0] 'a': type: unknown node type 'lienar' (did you mean 'linear'?)" in line for line in lines)
    assert any("nodes[1] 'head_0': config.head_dim: expected a positive integer, got 'abc'" in line for line in lines)
    assert any("unknown node 'ghost'" in line for line in lines)
    assert all(line.startswith(str(bad)) for line in lines)


@pytest.mark.parametrize("content, expected", [
    ("nodes: [\n  {id: a\n", "line"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_validate_yaml_errors(tmp_path: Path, content: str, expected: str) -> None:
    """Syntax errors name the line; a non-mapping document is refused clearly."""
    bad = tmp_path / "net.yml"
    bad.write_text(content)
    res = dcnr("network", "validate", str(bad))
    assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    res = dcnr("network", "validate", str(tmp_path / "nope.yml"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_analyze_json_matches_topologies() -> None:
    """`analyze --json` has the documented keys and the SPEC §13 counts."""
    for name, vnodes, params in (("topology1.yml", 139, 27.2e6), ("topology2.yml", 183, 45.1e6)):
        res = dcnr("network", "analyze", "--json", str(NETWORKS / name))
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert set(doc) == {"name", "vnodes", "parameters", "nodes"}
        assert doc["vnodes"] == vnodes == len(doc["nodes"])
        assert abs(doc["parameters"] - params) / params < 0.002
        assert sum(n["parameters"] for n in doc["nodes"]) == doc["parameters"]
        first = doc["nodes"][0]
        assert set(first) == {"id", "type", "input_shapes", "output_shapes", "parameters"}
        heads = [n for n in doc["nodes"] if n["type"] == "attention_head"]
        assert heads and all(n["output_shapes"] == [[heads[0]["input_shapes"][0][0], 64]] for n in heads)


def test_analyze_table() -> None:
    res = dcnr("network", "analyze", str(NETWORKS / "tiny_lm.yml"))
    assert res.returncode == 0, res.stderr
    assert "attention_head" in res.stdout and "total" in res.stdout and "855,936" in res.stdout


def test_demo_on_user_corpus(tmp_path: Path) -> None:
    """`dcnr demo --corpus` trains on the user's text, the loss falls, and a sample is printed."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the cat number {i % 7} sat on the mat.\n" for i in range(3000)))
    res = dcnr("demo", "--corpus", str(corpus), "--steps", "30", "--batch-size", "4", "--sample-tokens", "8",
               "--prompt", "the cat", "--save", str(tmp_path / "ckpt.safetensors"))
    assert res.returncode == 0, res.stderr
    loss_line = next(line for line in res.stderr.splitlines() if line.startswith("loss "))
    first, last = (float(x) for x in loss_line.split(";")[0].split()[1::2])
    assert last < first - 1.0
    checked = next(line for line in res.stderr.splitlines() if line.startswith("validation (sample:0.05): "))
    assert re.fullmatch(r"validation \(sample:0\.05\): (\d+) work units re-executed by the other PNode, \1 "
                        r"matched bit for bit", checked), checked  # validation stays on in the demo, all honest
    assert res.stdout.startswith("the cat")
    assert (tmp_path / "ckpt.safetensors").stat().st_size > 1_000_000


def test_demo_bad_corpus_is_a_user_error(tmp_path: Path) -> None:
    res = dcnr("demo", "--corpus", str(tmp_path / "missing"), "--steps", "1")
    assert res.returncode == 2 and "no such file or directory" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("option", ["--max-artifact-mb", "--max-dataset-mb"])
def test_an_orchestrator_limit_below_one_mib_is_a_user_error(tmp_path: Path, option: str) -> None:
    res = dcnr("orchestrator", option, "0", "--state-dir", str(tmp_path / "state"))
    assert res.returncode == 2 and res.stderr == f"error: {option} must be at least 1, got 0\n", res.stderr
    assert not (tmp_path / "state").exists(), "refused before the orchestrator was made"


def test_the_orchestrator_limit_options_reach_the_orchestrator(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    made: dict[str, Any] = {}

    def orchestrator(state_dir: Path, **options: Any) -> None:
        made.update(options)
        raise ValueError("not started in this test")

    monkeypatch.setattr(serve, "_stop_on_signals", threading.Event)  # leave this process's signals alone
    monkeypatch.setattr(serve.logs, "configure", lambda fmt: None)
    monkeypatch.setattr(app_module, "Orchestrator", orchestrator)
    res = CliRunner().invoke(app, ["orchestrator", "--state-dir", str(tmp_path), "--max-artifact-mb", "3",
                                   "--max-dataset-mb", "5"])
    assert res.exit_code == 2 and "not started in this test" in res.output
    assert made["limits"] == Limits(max_artifact_bytes=3 * 2**20, max_dataset_bytes=5 * 2**20)


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def test_demo_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    """Ctrl-C during training: exit 130, the orchestrator and both PNode processes gone, state directory removed."""
    import signal
    import time

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the dog number {i % 5} ran in the park.\n" for i in range(3000)))
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "dcnr.cli.main", "demo", "--corpus", str(corpus),
                             "--steps", "100000", "--batch-size", "4"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        address, state = "", Path()
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("cluster: orchestrator at "):
                address = line.split()[3].rstrip(",")
                state = Path(line.rsplit("(state in ", 1)[1].strip().rstrip(")"))
            if address and "network 'tiny-lm'" in line:
                break
            assert time.monotonic() < deadline, "the demo did not start in time"
        assert address and len(_processes_mentioning(address)) == 2  # the two PNodes
        assert len(_processes_mentioning(f"--state-dir {state / 'state'}")) == 1  # the orchestrator
        time.sleep(2)  # training is under way
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _processes_mentioning(address) == [] and _processes_mentioning(str(state)) == []
    assert not state.exists()


def test_a_pnode_on_a_device_this_machine_lacks_is_a_user_error(tmp_path: Path) -> None:
    """Asked of torch in a child process (the PNode itself has not loaded it): the same one line as ever."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    res = dcnr("pnode", "--device", "cuda", "--state-dir", str(tmp_path / "p"),
               "--ca-fingerprint", "SHA256:" + "0" * 64)
    assert (res.returncode, res.stderr) == (2, "error: --device cuda: no CUDA device is available to torch on this "
                                               "machine\n"), res.stderr
