"""Prometheus metrics of an orchestrator, in a registry of its own.

Values the orchestrator already keeps are collected when scraped, never counted twice: from
its store (PNodes, sessions and their kept steps, the validation log), its relay registry and
its step timelines. Only what exists nowhere else is counted here: the step-time histogram
and the tokens trained, fed by its `History` as each step is recorded. Names follow Prometheus
conventions (`dcnr_` prefix, base units, `_total` counters); labels stay few (a state, a
verdict, one per PNode, relay or recent session). A registry per orchestrator, so several
in one process (tests) never collide in the default registry. A PNode's metrics:
`dcnr.web.pnode_metrics`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as CounterMetric
from prometheus_client import Histogram as HistogramMetric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dcnr import __version__
from dcnr.web import views

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator

STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PNODE_STATES = ("alive", "dead", "quarantined", "paused")
SESSION_STATES = ("created", "running", "suspended", "completed", "failed")
UNFINISHED = ("created", "running", "suspended")
RECENT_SESSIONS = 20  # sessions with gauges of their own: every unfinished one, then the newest finished ones


def orchestrator_registry(orch: Orchestrator) -> CollectorRegistry:
    """A registry of the orchestrator's metrics: its state, collected when scraped, and the step times its
    history reports from now on."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(OrchestratorCollector(orch))
    steps = HistogramMetric("dcnr_session_step_duration_seconds", "Wall time of each training step of a session, "
                            "from its batch to its update", ["network"], buckets=STEP_BUCKETS, registry=registry)
    tokens = CounterMetric("dcnr_session_trained_tokens", "Tokens trained on by sessions' steps", ["network"],
                           registry=registry)

    def observe(event: Mapping[str, Any]) -> None:
        network = str(event.get("network", ""))
        steps.labels(network).observe(float(event["duration_seconds"]))
        tokens.labels(network).inc(float(event["tokens_per_second"]) * float(event["duration_seconds"]))

    orch.history.observe(observe)
    return registry


class OrchestratorCollector(Collector):
    """The orchestrator's state as metrics, read when scraped."""

    def __init__(self, orch: Orchestrator) -> None:
        self.o = orch

    def collect(self) -> Iterator[Metric]:
        yield from self._fleet()
        yield from self._relays()
        yield from self._sessions()
        yield from self._validation()
        info = GaugeMetricFamily("dcnr_orchestrator_info", "The orchestrator's software version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info

    def _fleet(self) -> Iterator[Metric]:
        now = time.time()
        standings = {s.pnode: s for s in self.o.store.list_standings()}
        hosted = self.o.fleet.vnodes_by_pnode()
        pnodes = self.o.store.list_pnodes()
        states = Counter(views.pnode_state(p, standings.get(p.id)) for p in pnodes)
        count = GaugeMetricFamily("dcnr_fleet_pnodes", "PNodes the orchestrator knows, by state", labels=["state"])
        for state in PNODE_STATES:
            count.add_metric([state], states.get(state, 0))
        yield count
        alive = [p for p in pnodes if p.state == "alive"]
        relayed = GaugeMetricFamily("dcnr_fleet_relayed_pnodes", "Alive PNodes that take part through a relay")
        relayed.add_metric([], sum(1 for p in alive if views.relayed(p.address)))
        yield relayed
        load = GaugeMetricFamily("dcnr_fleet_pnode_load", "Queued work per compute thread, as each alive PNode last "
                                 "reported it", labels=["pnode"])
        lag = GaugeMetricFamily("dcnr_fleet_pnode_heartbeat_age_seconds", "Seconds since each alive PNode's last "
                                "heartbeat", labels=["pnode"])
        vnodes = GaugeMetricFamily("dcnr_fleet_pnode_vnodes", "VNodes placed on each alive PNode", labels=["pnode"])
        compute = CounterMetricFamily("dcnr_fleet_pnode_compute_seconds", "Compute time each PNode contributed",
                                      labels=["pnode"])
        timed = self.o.timelines.compute_seconds()
        for p in alive:
            load.add_metric([p.id], p.load)
            lag.add_metric([p.id], max(0.0, now - p.last_seen))
            vnodes.add_metric([p.id], len(hosted.get(p.id, ())))
        for p in pnodes:
            compute.add_metric([p.id], views.compute_seconds(p, timed))
        yield from (load, lag, vnodes, compute)

    def _relays(self) -> Iterator[Metric]:
        records = self.o.relays.records()
        states = Counter(r.state for r in records)
        count = GaugeMetricFamily("dcnr_relays", "Relays known, the orchestrator's own among them, by state",
                                  labels=["state"])
        for state in ("alive", "dead"):
            count.add_metric([state], states.get(state, 0))
        attached = GaugeMetricFamily("dcnr_relay_attached_pnodes", "PNodes attached to each relay (as of its last "
                                     "heartbeat)", labels=["relay"])
        forwarded = CounterMetricFamily("dcnr_relay_forwarded_bytes", "Payload bytes each relay carried since it "
                                        "started, both ways", labels=["relay"])
        hops = CounterMetricFamily("dcnr_relay_hop_bytes", "Of the bytes each relay carried, hops' (activations and "
                                   "gradients)", labels=["relay"])
        for r in records:
            attached.add_metric([r.id], r.attached)
            forwarded.add_metric([r.id], r.bytes_forwarded)
            hops.add_metric([r.id], r.hop_bytes)
        yield from (count, attached, forwarded, hops)

    def _sessions(self) -> Iterator[Metric]:
        sessions = self.o.store.list_sessions()
        states = Counter(s.state for s in sessions)
        count = GaugeMetricFamily("dcnr_sessions", "Training sessions, by state", labels=["state"])
        for state in SESSION_STATES:
            count.add_metric([state], states.get(state, 0))
        yield count
        step = GaugeMetricFamily("dcnr_session_step", "Steps each recent session has done", labels=["session"])
        steps = GaugeMetricFamily("dcnr_session_steps", "Steps each recent session runs in all", labels=["session"])
        loss = GaugeMetricFamily("dcnr_session_loss", "Loss of each recent session's latest step", labels=["session"])
        speed = GaugeMetricFamily("dcnr_session_tokens_per_second", "Tokens per second of each recent session's "
                                  "latest step", labels=["session"])
        held_out = GaugeMetricFamily("dcnr_session_held_out_loss", "Held-out loss of each recent session, as last "
                                     "evaluated", labels=["session"])
        unfinished = [s for s in sessions if s.state in UNFINISHED]
        finished = [s for s in sessions if s.state not in UNFINISHED]  # oldest first
        for s in unfinished + finished[len(finished) - max(0, RECENT_SESSIONS - len(unfinished)):]:
            step.add_metric([s.id], s.step)
            steps.add_metric([s.id], s.steps)
            latest = self.o.history.latest(s.id)
            if latest is None:
                continue
            loss.add_metric([s.id], float(latest["loss"]))
            speed.add_metric([s.id], float(latest["tokens_per_second"]))
            if latest.get("held_out_loss") is not None:
                held_out.add_metric([s.id], float(latest["held_out_loss"]))
        yield from (step, steps, loss, speed, held_out)

    def _validation(self) -> Iterator[Metric]:
        verdicts = self.o.store.count_validation_verdicts()
        counted = CounterMetricFamily("dcnr_validation_verdicts", "Entries of the validation log, by verdict (checks "
                                      "of PNodes' work, and operators' trust and release)", labels=["verdict"])
        for verdict, n in sorted(verdicts.items()):
            counted.add_metric([verdict], n)
        samples = CounterMetricFamily("dcnr_validation_samples", "Work units drawn and checked by validation")
        samples.add_metric([], sum(n for v, n in verdicts.items() if v not in views.OPERATOR_VERDICTS))
        yield from (counted, samples)
