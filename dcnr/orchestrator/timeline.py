"""Step timelines: which VNode ran when, on which PNode, and the time hops spent on the wire.

Owns the last `KEEP_STEPS` training steps of each session (of the `KEEP_SESSIONS` that trained
last), in memory only, as the PNodes reported them with the update that ended each step
(`dcnr.transport.messages.StepTiming`), and turning one into the timeline the dashboard draws.

Clocks. Each PNode times its work on its own monotonic clock from the moment the run's BeginRun
reached it; the driver notes, on its clock, when it sent each PNode that BeginRun and when the
answer came back. A PNode's zero is taken as the midpoint of the two, so a time is off by at most
half that round trip (less when the network is symmetric): fine for seeing where a step's time
goes, not for sub-millisecond claims. A hop's wire time goes from its sender's clock to its
receiver's; when the two misalign so that it would arrive before it left, it is drawn as arriving
when it left.

PNodes are not trusted: a report's records are kept only for VNodes the PNode hosted in the
step's placement and hops of the run between the step's PNodes, with finite times inside the
step (give or take the alignment); at most `MAX_SPANS` spans and `MAX_WIRE` hops per step.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dcnr.transport.messages import StepTiming, TimedHop

KEEP_STEPS = 20  # steps kept per session
KEEP_SESSIONS = 16  # sessions whose steps are kept (those that trained last)
MAX_SPANS = 50_000  # spans of one step's timeline
MAX_WIRE = 50_000  # hops of one step's timeline


@dataclass(frozen=True)
class StepRecord:
    """What the orchestrator knows of one step's timing: the reports as they came, and its own clock."""

    step: int  # the session's step
    run: str
    duration: float  # seconds from the first BeginRun sent to the last update answered
    begun: Mapping[str, tuple[float, float]]  # PNode -> (BeginRun sent, answered), seconds since the step began
    assignments: Mapping[str, str]  # VNode -> PNode, the step's placement
    reports: Mapping[str, StepTiming] = field(default_factory=dict)  # PNode -> its timing


class Timelines:
    """The recent steps of each session (thread-safe)."""

    def __init__(self, keep_steps: int = KEEP_STEPS, keep_sessions: int = KEEP_SESSIONS) -> None:
        self.keep_steps, self.keep_sessions = keep_steps, keep_sessions
        self._sessions: OrderedDict[str, deque[StepRecord]] = OrderedDict()
        self._drawn: dict[tuple[str, int, str], dict[str, Any]] = {}  # (session, step, run) -> its timeline
        self._compute: dict[str, float] = {}  # PNode -> seconds of work in the steps it timed, since this started
        self._lock = threading.Lock()

    def add(self, session: str, record: StepRecord) -> None:
        """Keep a step of `session` (a step trained again replaces the one kept)."""
        spent = {p: min(record.duration, sum(w.end - w.start for w in t.work if 0 <= w.end - w.start < math.inf))
                 for p, t in record.reports.items()}  # one compute thread: its work never overlaps
        with self._lock:
            for pnode, seconds in spent.items():
                self._compute[pnode] = self._compute.get(pnode, 0.0) + seconds
            steps = self._sessions.pop(session, None) or deque(maxlen=self.keep_steps)
            kept = [r for r in steps if r.step < record.step]  # steps past it were rolled back
            steps.clear()
            steps.extend([*kept, record])
            self._sessions[session] = steps
            while len(self._sessions) > self.keep_sessions:
                self._sessions.popitem(last=False)
            live = {(s, r.step, r.run) for s, rs in self._sessions.items() for r in rs}
            self._drawn = {k: v for k, v in self._drawn.items() if k in live}

    def steps(self, session: str) -> list[int]:
        """The steps of `session` kept, oldest first."""
        with self._lock:
            return [r.step for r in self._sessions.get(session, ())]

    def forget(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    def compute_seconds(self) -> dict[str, float]:
        """Seconds each PNode spent on the work of the session steps it timed since this orchestrator started."""
        with self._lock:
            return dict(self._compute)

    def timeline(self, session: str, step: int | None = None) -> dict[str, Any] | None:
        """The timeline of a kept step of `session` (default: the newest), as the dashboard's API gives it;
        None when that step is not kept."""
        with self._lock:
            records = list(self._sessions.get(session, ()))
        found = next((r for r in reversed(records) if step is None or r.step == step), None)
        if found is None:
            return None
        key = (session, found.step, found.run)
        with self._lock:
            drawn = self._drawn.get(key)
        if drawn is None:
            drawn = draw(found)
            with self._lock:
                self._drawn[key] = drawn
        return drawn


def draw(record: StepRecord) -> dict[str, Any]:
    """One step's timeline: spans of work and hops on the wire, in seconds since the step began."""
    zero = {p: (sent + answered) / 2 for p, (sent, answered) in record.begun.items()}
    latest = record.duration + max((answered - sent for sent, answered in record.begun.values()), default=0.0)

    def when(pnode: str, t: float) -> float | None:
        """A PNode's time on the step's clock, if it is a plausible one."""
        if not math.isfinite(t):
            return None
        at = zero[pnode] + t
        return at if -latest <= at <= 2 * latest + 1.0 else None

    spans: list[dict[str, Any]] = []
    sent: dict[tuple[str, str, str, int, int], tuple[float, int]] = {}  # (sender, vnode, op, mb, index) -> (at, bytes)
    for pnode, report in sorted(record.reports.items()):
        if pnode not in zero or report.run != record.run:
            continue
        for w in report.work:
            start, end = when(pnode, w.start), when(pnode, w.end)
            if record.assignments.get(w.vnode) == pnode and start is not None and end is not None and start <= end \
                    and len(spans) < MAX_SPANS:
                spans.append({"vnode": w.vnode, "pnode": pnode, "op": w.op, "micro_batch": w.micro_batch,
                              "start": max(0.0, start), "end": max(0.0, end)})
        for h in report.sent:
            at = when(pnode, h.at)
            if at is not None and h.vnode in record.assignments:
                sent.setdefault((pnode, h.vnode, h.op, h.micro_batch, h.index), (at, max(0, h.bytes)))
    wire: list[dict[str, Any]] = []
    for pnode, report in sorted(record.reports.items()):
        if pnode not in zero or report.run != record.run:
            continue
        for h in report.received:
            left = _left(sent, h)
            arrived = when(pnode, h.at)
            if left is None or arrived is None or record.assignments.get(h.vnode) != pnode or h.peer not in zero \
                    or len(wire) >= MAX_WIRE:
                continue
            start, size = left
            wire.append({"from": h.peer, "to": pnode, "vnode": h.vnode, "micro_batch": h.micro_batch, "op": h.op,
                         "start": max(0.0, start), "end": max(0.0, start, arrived), "bytes": size})
    spans.sort(key=lambda s: (s["start"], s["pnode"], s["vnode"]))
    wire.sort(key=lambda w: (w["start"], w["from"], w["to"]))
    return {"step": record.step, "pnodes": sorted(zero), "spans": spans, "wire": wire}


def _left(sent: Mapping[tuple[str, str, str, int, int], tuple[float, int]], hop: TimedHop) -> tuple[float, int] | None:
    """When (and with how many bytes) the sender says a received hop left it."""
    return sent.get((hop.peer, hop.vnode, hop.op, hop.micro_batch, hop.index))
