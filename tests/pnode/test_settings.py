"""How `dcnr join` sizes a PNode to its machine within the volunteer's caps, and the settings it keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcnr.errors import InvalidArgument
from dcnr.pnode import settings as sizing
from dcnr.pnode.settings import SETTINGS_FILE, JoinSettings, listen_address, size

GiB = 2**30


@pytest.fixture()
def machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU-only machine with 8 usable CPUs and 16 GiB available."""
    monkeypatch.setattr(sizing, "detect_device", lambda state_dir=None: "cpu")
    monkeypatch.setattr(sizing, "usable_cpus", lambda: 8)
    monkeypatch.setattr(sizing, "available_memory", lambda: 16 * GiB)


def test_without_caps_it_takes_half_the_cpus_and_half_the_memory_available(machine: None) -> None:
    got = size(JoinSettings(orchestrator="h:1"))
    assert (got.device, got.threads, got.memory_budget) == ("cpu", 4, 8 * GiB)
    assert "capped" not in got.reason and "4 of 8 CPUs" in got.reason


def test_caps_only_ever_lower_what_it_takes(machine: None) -> None:
    got = size(JoinSettings(orchestrator="h:1", max_memory=2 * GiB, max_threads=2))
    assert (got.threads, got.memory_budget) == (2, 2 * GiB) and "capped: memory, threads" in got.reason
    generous = size(JoinSettings(orchestrator="h:1", max_memory=64 * GiB, max_threads=64))
    assert (generous.threads, generous.memory_budget) == (4, 8 * GiB)


def test_a_machine_with_one_cpu_still_gets_a_thread(machine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizing, "usable_cpus", lambda: 1)
    assert size(JoinSettings(orchestrator="h:1")).threads == 1


def test_a_device_named_is_taken_as_named(machine: None) -> None:
    assert size(JoinSettings(orchestrator="h:1", device="cpu")).device == "cpu"
    with pytest.raises(InvalidArgument, match="--device"):
        JoinSettings(device="tpu")


def test_the_real_machine_is_sized_sensibly() -> None:
    got = size(JoinSettings(orchestrator="h:1"))
    assert got.device in ("cuda", "mps", "cpu") and got.threads >= 1 and got.memory_budget > 0


def test_settings_are_kept_and_read_back_and_given_values_replace_them(tmp_path: Path) -> None:
    assert JoinSettings.load(tmp_path) is None
    first = JoinSettings(orchestrator="h:50052", ca_fingerprint="SHA256:ab", max_memory=4 * GiB, name="desk")
    first.save(tmp_path)
    assert JoinSettings.load(tmp_path) == first
    later = first.updated(orchestrator=None, max_threads=3, name=None)  # None: not given
    assert later == JoinSettings(orchestrator="h:50052", ca_fingerprint="SHA256:ab", max_memory=4 * GiB,
                                 max_threads=3, name="desk")
    assert later.without("max_memory").max_memory is None


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": "other"}), json.dumps(
    {"format": "dcnr-join/1", "max_threads": -1})])
def test_a_damaged_settings_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / SETTINGS_FILE).write_text(text)
    with pytest.raises(InvalidArgument, match=SETTINGS_FILE):
        JoinSettings.load(tmp_path)


@pytest.mark.parametrize("bad", [{"orchestrator": "no-port"}, {"max_memory": 0}, {"port": 70000}])
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        JoinSettings(**bad)  # type: ignore[arg-type]


def test_it_listens_on_loopback_for_an_orchestrator_here_and_on_every_interface_otherwise() -> None:
    assert listen_address(JoinSettings(orchestrator="127.0.0.1:50052")) == ("127.0.0.1", None)
    assert listen_address(JoinSettings(orchestrator="localhost:50052")) == ("127.0.0.1", None)
    bind, advertised = listen_address(JoinSettings(orchestrator="192.0.2.7:50052"))
    assert bind == "0.0.0.0" and advertised
    assert listen_address(JoinSettings(orchestrator="192.0.2.7:50052", host="10.0.0.2")) == ("10.0.0.2", None)
    assert listen_address(JoinSettings(orchestrator="192.0.2.7:50052", advertise="me.example")) == (
        "0.0.0.0", "me.example")
