"""Every RPC of every service, fuzzed as every role that can reach it: no crash, no hang, no answer the
client cannot read, and no rejected call that changes state.

The fuzzer is `benchmarks/fuzz_rpc.py` (messages from `benchmarks/proto_strategies.py`), run here with
`COUNT` messages per RPC against an orchestrator and three PNodes in this process. The seed is fixed, so every
run draws the same messages, and printed (`pytest -s` shows it); `DCNR_FUZZ_SEED=<n>` fuzzes with another.
A finding names its chunk seed and message number: `benchmarks/fuzz_rpc.py --seed <n> --rpc <name>` replays it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcnr.errors import NotFound

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fuzz_rpc import ENDPOINT_SERVICES, Fuzzer, World, flood, full_name, rpcs

COUNT = 20  # messages per RPC: every role of every endpoint gets several
SEED = int(os.environ.get("DCNR_FUZZ_SEED", "20250601"))
LISTEN = 0.3  # seconds a session that is not running is listened to


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("fuzz"))
    try:
        w.start()
        yield w
    finally:
        w.close()


def test_every_rpc_as_every_role_survives_fuzzed_messages(world: World) -> None:
    print(f"fuzz seed {SEED} (set DCNR_FUZZ_SEED to change it)")
    fuzzer = Fuzzer(world, SEED, COUNT, listen=LISTEN)
    try:
        reports = [fuzzer.fuzz(m) for m in rpcs()]
    finally:
        fuzzer.close()
    findings = [f.line() for r in reports for f in r.findings]
    assert not findings, f"seed {SEED}:\n" + "\n".join(findings)
    assert [r.sent for r in reports] == [COUNT] * len(rpcs())
    every = {f"{e}/{r}" for e, (_, roles) in ENDPOINT_SERVICES.items() for r in roles}
    assert {t for r in reports for t in r.targets} == every
    # the seeds carry calls past the first checks: every service accepts some (not only Health and listings)
    accepted = {r.rpc for r in reports if r.codes["OK"] and not r.rpc.endswith(("/Health", "/ListNetworks"))}
    for service in ("OrchestratorService", "NodeManagementService", "VNodeService", "PNodeService",
                    "StorageService"):
        assert any(f".{service}/" in rpc for rpc in accepted), f"no call to {service} was accepted"


def test_the_fuzzer_reports_a_crash_and_a_state_change_by_a_rejected_call(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: a handler that raises a bug, or changes state and then refuses, is reported."""
    get_network = next(m for m in rpcs() if full_name(m) == "dcnr.v2.OrchestratorService/GetNetwork")
    tokens = world.orch.tokens

    def info_changing_state(name: str) -> None:
        tokens.create(f"leak{len(tokens.list())}", "researcher")
        raise NotFound(f"unknown network {name!r}")

    fuzzer = Fuzzer(world, SEED, 6, listen=LISTEN)
    try:
        monkeypatch.setattr(world.orch.networks, "info", info_changing_state)
        changed = fuzzer.fuzz(get_network, roles={"operator"})
        monkeypatch.setattr(world.orch.networks, "info", lambda name: 1 / 0)
        crashed = fuzzer.fuzz(get_network, roles={"operator"})
    finally:
        fuzzer.close()
    assert [(f.kind, f.code, f.changed) for f in changed.findings] == [("state", "NOT_FOUND", ["sqlite"])] * 6
    assert [(f.kind, f.code) for f in crashed.findings] == [("crash", "INTERNAL")] * 6


def test_the_default_rate_limit_holds_under_a_flood(tmp_path: Path) -> None:
    report = flood(tmp_path, 1500)
    assert report.holds, report
    assert report.codes["OK"] + report.codes["RESOURCE_EXHAUSTED"] == report.sent, report.codes
