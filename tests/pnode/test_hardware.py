"""Hardware detection without torch in the PNode: asked in a child process, a CPU's answer kept in the state
directory until torch or the machine changes; devices this machine lacks are refused with one clear line."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dcnr.errors import DcnrError
from dcnr.pnode import hardware
from dcnr.pnode.hardware import ask_torch, compute_class, detect_hardware, torch_facts


def test_the_child_answers_what_torch_here_answers_and_a_cpu_answer_is_kept(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    facts = torch_facts("cpu", tmp_path)  # a real child process
    here = ask_torch("cpu")
    assert {k: facts[k] for k in ("cuda", "mps", "compute_class")} == \
        {k: here[k] for k in ("cuda", "mps", "compute_class")}
    assert facts["compute_class"] == compute_class("cpu") and facts["threads"] >= 1
    kept = json.loads((tmp_path / hardware.CACHE).read_text())
    assert kept == {"key": hardware.fingerprint(), "facts": facts}

    asked: list[str] = []

    def probe(device: str) -> dict[str, Any]:
        asked.append(device)
        return {**facts, "compute_class": "asked again"}

    monkeypatch.setattr(hardware, "_probe", probe)
    assert torch_facts("cpu", tmp_path) == facts and not asked  # the same torch, CPU and environment
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # torch's default thread count may differ: ask again
    assert torch_facts("cpu", tmp_path)["compute_class"] == "asked again" and asked == ["cpu"]
    assert torch_facts("cpu", tmp_path)["compute_class"] == "asked again" and asked == ["cpu"]  # kept anew


def test_the_fingerprint_follows_torchs_installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = hardware.fingerprint()
    assert before is not None
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "version.py").write_text("__version__ = '0.0'\n")
    spec = importlib.util.spec_from_file_location("torch", fake / "__init__.py")
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: spec)  # torch installed elsewhere
    elsewhere = hardware.fingerprint()
    os.utime(fake / "version.py", ns=(0, 0))  # installed again
    assert len({before, elsewhere, hardware.fingerprint()}) == 3
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: None)
    assert hardware.fingerprint() is None  # no torch: nothing to keep


def test_gpus_are_asked_about_on_every_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def probe(device: str) -> dict[str, Any]:
        asked.append(device)
        return {"cuda": True, "mps": False, "threads": 4, "compute_class": f"torch x / {device} / isa / blas"}

    monkeypatch.setattr(hardware, "_probe", probe)
    for _ in range(2):
        assert torch_facts("cuda", tmp_path)["cuda"]
    assert asked == ["cuda", "cuda"] and not (tmp_path / hardware.CACHE).exists()


def test_a_child_that_cannot_answer_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(DcnrError, match=r"^could not ask torch about this machine: exit code 1$"):
        torch_facts("cpu", tmp_path)
    assert not (tmp_path / hardware.CACHE).exists()


def test_devices_this_machine_lacks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^--device must be cpu, cuda or mps, got 'tpu'$"):
        detect_hardware("tpu", None, 1, tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^--device cuda: no CUDA device is available to torch on this machine$"):
            detect_hardware("cuda", None, 1, tmp_path)
    found = detect_hardware("cpu", 2**30, None, tmp_path)
    assert found["threads"] == torch.get_num_threads() and found["memory_budget_bytes"] == 2**30
    assert found["compute_class"] == compute_class("cpu")
