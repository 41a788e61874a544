"""Prometheus metrics of a PNode, in a registry of its own, read from its runtime when scraped.

Its runtime already counts compute, validation work, hops and bytes and keeps its queues; its
hop transport counts hops in flight; its agent knows its last heartbeat and whether it is
relayed. Nothing is counted twice here. Imports nothing of the orchestrator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class PNodeSource(Protocol):
    """What a PNode's metrics read from its runtime (`dcnr.pnode.runtime.PNodeRuntime`)."""

    stats: dict[str, float]
    started_at: float  # time.monotonic() when it started

    def queues(self) -> dict[str, int]: ...


def pnode_registry(runtime: PNodeSource, hops: Callable[[], Any], heartbeat: Callable[[], float],
                   relayed: Callable[[], bool], hosted: Callable[[], tuple[int, int]]) -> CollectorRegistry:
    """A registry of a PNode's metrics: `hops()` is its hop transport now (its `in_flight` count is read),
    `heartbeat()` the unix time of its last answered heartbeat, `relayed()` whether it takes part through a
    relay, `hosted()` its hosted VNodes and their memory in bytes."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PNodeCollector(runtime, hops, heartbeat, relayed, hosted))
    return registry


class PNodeCollector(Collector):
    """A PNode's counters and queues as metrics, read when scraped."""

    COUNTERS = (  # runtime stat, metric name (without _total), help
        ("busy_seconds", "dcnr_pnode_compute_seconds", "Time its compute thread spent running VNodes"),
        ("commit_seconds", "dcnr_pnode_commit_seconds", "Time spent on validation digests, signatures and evidence"),
        ("verify_seconds", "dcnr_pnode_verify_seconds", "Time spent re-executing other PNodes' work units"),
        ("verified_units", "dcnr_pnode_verified_units", "Other PNodes' work units it re-executed"),
        ("tensor_bytes_sent", "dcnr_pnode_sent_bytes", "Bytes of hop values sent to other PNodes"),
        ("tensor_bytes_received", "dcnr_pnode_received_bytes", "Bytes of hop values received from other PNodes"),
        ("hops_sent", "dcnr_pnode_sent_hops", "Hops sent to other PNodes (retries included)"),
        ("hops_received", "dcnr_pnode_received_hops", "Hops received from other PNodes"),
        ("local_hops", "dcnr_pnode_local_hops", "Hops between VNodes of this PNode (never serialized)"),
        ("refused", "dcnr_pnode_refused", "Work refused (memory budget, timeouts, no room)"),
    )

    def __init__(self, runtime: PNodeSource, hops: Callable[[], Any], heartbeat: Callable[[], float],
                 relayed: Callable[[], bool], hosted: Callable[[], tuple[int, int]]) -> None:
        self.runtime, self.hops, self.heartbeat, self.relayed, self.hosted = runtime, hops, heartbeat, relayed, hosted

    def collect(self) -> Iterator[Metric]:
        stats = dict(self.runtime.stats)
        for key, name, text in self.COUNTERS:
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], float(stats.get(key, 0.0)))
            yield counter
        uptime = time.monotonic() - self.runtime.started_at
        idle = CounterMetricFamily("dcnr_pnode_idle_seconds", "Time its compute thread had no VNode to run")
        idle.add_metric([], max(0.0, uptime - float(stats.get("busy_seconds", 0.0))))
        yield idle
        queues = self.runtime.queues()
        depth = GaugeMetricFamily("dcnr_pnode_queue_depth", "What waits in each queue: compute (hops and calls for "
                                  "the compute thread), outbox (hops to send), reports, hashing", labels=["queue"])
        for queue in ("compute", "outbox", "reports", "hashing"):
            depth.add_metric([queue], queues.get(queue, 0))
        yield depth
        requests = GaugeMetricFamily("dcnr_pnode_requests_in_progress", "Micro-batches begun here and not finished")
        requests.add_metric([], queues.get("requests", 0))
        yield requests
        unacknowledged = getattr(self.hops(), "in_flight", None)  # the transports of dcnr.transport.grpc count
        in_flight = GaugeMetricFamily("dcnr_pnode_hops_in_flight", "Hops sent to other PNodes and not yet "
                                      "acknowledged")
        in_flight.add_metric([], float(getattr(unacknowledged, "count", 0)))
        yield in_flight
        beat = self.heartbeat()
        lag = GaugeMetricFamily("dcnr_pnode_heartbeat_age_seconds", "Seconds since the orchestrator last answered a "
                                "heartbeat (or the registration)")
        lag.add_metric([], max(0.0, time.time() - beat) if beat else 0.0)
        yield lag
        relayed = GaugeMetricFamily("dcnr_pnode_relayed", "1 while it takes part through a relay, else 0")
        relayed.add_metric([], 1.0 if self.relayed() else 0.0)
        yield relayed
        count, memory = self.hosted()
        vnodes = GaugeMetricFamily("dcnr_pnode_vnodes", "VNodes hosted")
        vnodes.add_metric([], count)
        used = GaugeMetricFamily("dcnr_pnode_vnode_memory_bytes", "Memory of the hosted VNodes")
        used.add_metric([], memory)
        yield from (vnodes, used)
