"""A stand-in for the orchestrator that PNode runtimes report to in tests: reports are kept, nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from dcnr.transport.messages import Membership, Report


class RecordingLink:
    """`OrchestratorLink` that keeps the reports a runtime sends (no storage, no membership)."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def register(self, member: Membership) -> float:
        return 30.0

    def heartbeat(self, pnode: str, load: float, memory_used: int, vnodes: Sequence[str], refused: int,
                  paused: bool = False, compute_seconds: float = 0.0) -> bytes:
        return b""

    def unregister(self, pnode: str) -> None:
        pass

    def report(self, pnode: str, reports: Sequence[Report]) -> None:
        self.reports.extend(reports)

    def put_blob(self, pnode: str, network: str, vnode: str, data: bytes) -> str:
        raise NotImplementedError

    def get_blob(self, pnode: str, network: str, vnode: str, digest: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass
