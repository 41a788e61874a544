"""What observability costs: PNodes timing each step, and the orchestrator's HTTP port under a dashboard's polling.

1. Step timing (`--part timing`). An orchestrator and 3 PNodes in this process, talking gRPC on
   loopback, train a small transformer LM (micro-batches pipelined across PNodes). Steps alternate
   between PNodes that time their work (`PNodeRuntime.timer`, as shipped) and PNodes that do not,
   so both see the same machine; it reports the median step time of each and the size of one
   step's timing report (serialized, as it rides on ApplyUpdate) per PNode.

2. The HTTP port (`--part http`). A `dcnr orchestrator` process and 2 `dcnr pnode` processes train
   the tiny LM; the orchestrator's CPU time and resident memory are read from /proc while one
   session trains unobserved and another, of as many steps, trains while a poller does what an
   open dashboard does every 2 s (overview, sessions, the session's history and timeline, fleet
   events, validation log) plus a Prometheus scrape of /metrics. Also: the orchestrator's memory
   right after start with the HTTP port off and on, and each endpoint's median latency.

Run from the repository root (numbers are from one machine at one time: compare within a run):

    .venv/bin/python benchmarks/bench_observability.py
    .venv/bin/python benchmarks/bench_observability.py --part timing --steps 20 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_lm_sessions import NETWORK, TEXTS

from dcnr.cluster import ORCHESTRATOR, LocalCluster
from dcnr.data.vocab import train_vocabulary
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.grpc.pnode import timing_to_pb

POLL = 2.0  # seconds between a dashboard's refreshes


# -- 1. step timing ------------------------------------------------------------------------------------------
def bench_timing(steps: int, micro_batches: int) -> dict[str, Any]:
    doc = transformer_lm("bench", blocks=4, heads=4, head_dim=16, dim=64, seq_len=32, vocab_size=512, dropout=0.0)
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp), 3, in_process=True) as cluster:
        c = cluster.client
        c.create_network(yaml.safe_dump(doc, sort_keys=False), name="bench")
        driver = cluster.orch.driver
        g = torch.Generator().manual_seed(0)
        batch = {k: torch.randint(0, 512, (8, 32), generator=g) for k in ("tokens", "targets")}
        times: dict[str, list[float]] = {"timed": [], "untimed": []}
        for step in range(2 * steps + 2):
            timed = step % 2 == 0
            for pnode in cluster.pnodes:
                pnode.runtime.timer.enabled = timed
            started = time.perf_counter()
            driver.train_step("bench", batch, micro_batches, session="bench", session_step=step + 1)
            if step >= 2:  # the first of each: warm-up
                times["timed" if timed else "untimed"].append(time.perf_counter() - started)
        spans = cluster.orch.timelines.timeline("bench", 2 * steps + 1)  # the last timed step
        record = cluster.orch.timelines.record("bench", 2 * steps + 1)
        sizes = sorted(len(timing_to_pb(t).SerializeToString()) for t in record.reports.values()) if record else []
        return {"vnodes": len(driver.network("bench").spec.nodes), "micro_batches": micro_batches,
                "steps_each": steps, "timed_ms": 1000 * statistics.median(times["timed"]),
                "untimed_ms": 1000 * statistics.median(times["untimed"]),
                "overhead": statistics.median(times["timed"]) / statistics.median(times["untimed"]) - 1,
                "report_bytes_per_pnode": sizes, "spans_per_step": len(spans["spans"]) if spans else 0,
                "wire_per_step": len(spans["wire"]) if spans else 0}


# -- 2. the HTTP port ---------------------------------------------------------------------------------------
def _proc(pid: int) -> tuple[float, int, int]:
    """(CPU seconds used, resident KiB, peak resident KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ticks / 100.0, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()
    return time.perf_counter() - started


def _session(cluster: LocalCluster, steps: int, poll: bool) -> dict[str, Any]:
    c = cluster.client
    pid = cluster.procs[ORCHESTRATOR].pid
    session = c.create_session("lm", "d", steps, batch_size=8, micro_batches=2, seed=1)
    latencies: dict[str, list[float]] = {}
    stop = threading.Event()

    def poller() -> None:
        paths = ["/api/overview", "/api/sessions", f"/api/sessions/{session.id}/history",
                 f"/api/sessions/{session.id}/timeline", "/api/events", "/api/validation?limit=100", "/metrics"]
        while not stop.wait(POLL):
            for path in paths:
                with contextlib.suppress(OSError):  # no timeline yet
                    latencies.setdefault(path.split("?")[0].replace(session.id, "ID"), []).append(
                        _get(cluster.http_url + path))
    thread = threading.Thread(target=poller, daemon=True)
    cpu0, _, _ = _proc(pid)
    started = time.monotonic()
    c.start_session(session.id)
    if poll:
        thread.start()
    events = list(c.listen_session(session.id, timeout=600))
    wall = time.monotonic() - started
    stop.set()
    if poll:
        thread.join(30)
    cpu1, rss, peak = _proc(pid)
    assert events[-1].state == "completed", events[-1]
    return {"poll": poll, "steps": steps, "wall_s": wall, "orchestrator_cpu_s": cpu1 - cpu0,
            "orchestrator_cpu_percent": 100 * (cpu1 - cpu0) / wall, "rss_mib": rss / 1024, "peak_rss_mib": peak / 1024,
            "median_step_ms": 1000 * statistics.median(e.duration_seconds for e in events if e.loss is not None),
            "requests": sum(len(v) for v in latencies.values()),
            "latency_ms": {k: 1000 * statistics.median(v) for k, v in sorted(latencies.items())}}


def bench_http(steps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for http in (False, True):  # the orchestrator's memory once started, without and with the HTTP port
            with LocalCluster(Path(tmp) / f"idle-{http}", 0, http=http) as idle:
                idle.client.health()
                time.sleep(1.0)
                results[f"idle_rss_mib_http_{'on' if http else 'off'}"] = _proc(idle.procs[ORCHESTRATOR].pid)[1] / 1024
        with LocalCluster(Path(tmp) / "train", 2, http=True, heartbeat_interval=1.0) as cluster:
            c = cluster.client
            c.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
            c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
            c.create_network(NETWORK, name="lm")
            _session(cluster, 3, poll=False)  # warm-up
            results["unobserved"] = _session(cluster, steps, poll=False)
            results["polled"] = _session(cluster, steps, poll=True)
            results["unobserved_again"] = _session(cluster, steps, poll=False)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("timing", "http", "all"), default="all")
    parser.add_argument("--steps", type=int, default=12, help="timed steps of each kind (timing), or per session")
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    ns = parser.parse_args()
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    if ns.part in ("timing", "all"):
        out["timing"] = bench_timing(ns.steps, ns.micro_batches)
    if ns.part in ("http", "all"):
        out["http"] = bench_http(max(ns.steps, 20))
    if ns.json:
        print(json.dumps(out, indent=1))
        return
    if "timing" in out:
        t = out["timing"]
        print(f"step timing ({t['vnodes']} VNodes on 3 PNodes, {t['micro_batches']} micro-batches, "
              f"{t['spans_per_step']} spans and {t['wire_per_step']} hops on the wire per step): "
              f"{t['timed_ms']:.1f} ms/step timed, {t['untimed_ms']:.1f} ms untimed "
              f"({100 * t['overhead']:+.1f}%); a PNode's report: {t['report_bytes_per_pnode']} bytes")
    if "http" in out:
        h = out["http"]
        print(f"orchestrator memory at start: {h['idle_rss_mib_http_off']:.0f} MiB without HTTP, "
              f"{h['idle_rss_mib_http_on']:.0f} MiB with")
        for name in ("unobserved", "polled", "unobserved_again"):
            r = h[name]
            print(f"{name:>16}: {r['steps']} steps in {r['wall_s']:.1f} s, orchestrator CPU "
                  f"{r['orchestrator_cpu_s']:.2f} s ({r['orchestrator_cpu_percent']:.1f}%), RSS {r['rss_mib']:.0f} MiB "
                  f"(peak {r['peak_rss_mib']:.0f}), "
                  f"median step {r['median_step_ms']:.0f} ms, {r['requests']} requests")
        for path, ms in h["polled"]["latency_ms"].items():
            print(f"  GET {path}: {ms:.1f} ms median")


if __name__ == "__main__":
    main()
