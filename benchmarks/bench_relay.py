"""Relay benchmark: what going through a relay costs a PNode behind NAT.

SPEC §13 topology 1 (float32, as bench_cluster.py builds it) trains on two clusters side by side, step
by step in one run (who goes first alternates), so both see the same machine:

  direct   2 PNodes that listen (`dcnr pnode` processes);
  relayed  the same, but p1 is `--outbound-only`: it listens on no port and everything for it, and every
           hop it sends, goes through a `dcnr relay` process (the orchestrator's own relay is not used).

Each cluster's orchestrator runs in this process and drives its steps (`driver.train_step`). Reported:
step times (median and range) and their ratio, target <= 1.3x; bytes through the relay per step
(everything, and hops alone) against what p1 must exchange at least (the raw activations and gradients
crossing between p0 and p1, and the network's inputs sent to p1) — the relay must add no copies (target:
relay hop bytes / that minimum = 1.00, up to hop headers and acknowledgements).

With `--join`, it also times a volunteer's first contribution: from starting `dcnr join HOST:PORT
--ca-fingerprint ...` on a fresh state directory (no key, no CA yet) until its first micro-batch is
computed — it joins a running orchestrator that holds topology 1 and has no other PNode; the first
step after it registers computes on it (target <= 60 s on 2 cores, install excluded).

Run from the repository root:

    .venv/bin/python benchmarks/bench_relay.py                 # 1 warm-up + 5 timed steps each
    .venv/bin/python benchmarks/bench_relay.py --steps 9 --join --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cluster import NAME, crossing_traffic, input_traffic, train_step
from bench_topology1 import load_doc, make_batch, model_sizes

from dcnr.cluster import LocalCluster

TARGET_TIME_RATIO = 1.3  # relayed / direct, median step time
TARGET_BYTES_RATIO = 1.0  # relay hop bytes / the raw tensors to and from the relayed PNode
TARGET_JOIN_SECONDS = 60.0


def make(workdir: Path, threads: int, relayed: bool) -> LocalCluster:
    """An orchestrator in this process; p0 and p1 as `dcnr pnode` processes (p1 outbound-only if `relayed`)."""
    def command(address: str, name: str) -> list[str]:
        cmd = [sys.executable, "-m", "dcnr.cli.main", "pnode", "--orchestrator", address, "--name", name,
               "--state-dir", str(cluster.pnode_dir(name)), "--ca-fingerprint", cluster.ca_fingerprint,
               "--threads", str(threads)]
        return [*cmd, "--outbound-only"] if relayed and name == "p1" else cmd

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cluster = LocalCluster(workdir, ["p0", "p1"], heartbeat_interval=30.0, step_timeout=300.0, embedded=True,
                           pnode_command=command, env=env, start_timeout=120.0)
    return cluster


def start(cluster: LocalCluster, doc: dict[str, Any], relay: bool) -> None:
    cluster.start_orchestrator()
    if relay:
        cluster.start_relay("r0", "--heartbeat-interval", "1")  # fresh byte counts for the report
        cluster.wait_for_relays(["r0"])
    for name in cluster.pnode_names:
        cluster.start_pnode(name)
    cluster.wait_for_pnodes(cluster.pnode_names)
    cluster.client.create_network(yaml.safe_dump(doc, sort_keys=False), name=NAME)


def relay_bytes(cluster: LocalCluster) -> tuple[int, int]:
    """(bytes, hop bytes) the relay r0 carried so far, as of its last heartbeat."""
    rid = cluster.relay_id("r0")
    rec = next(r for r in cluster.client.list_relays() if r.id == rid)
    return rec.bytes_forwarded, rec.hop_bytes


def settled_relay_bytes(cluster: LocalCluster) -> tuple[int, int]:
    """The relay's counts once a heartbeat has reported everything up to now (they only grow)."""
    time.sleep(2.5)  # > its 1 s heartbeat interval, with room
    return relay_bytes(cluster)


def join_time(workdir: Path, doc: dict[str, Any], threads: int, say: Any) -> float:
    """Seconds from starting `dcnr join` on a fresh state directory to its first computed micro-batch."""
    cluster = LocalCluster(workdir, [], heartbeat_interval=30.0, step_timeout=300.0, embedded=True,
                           start_timeout=120.0)
    try:
        cluster.start_orchestrator()
        cluster.client.create_network(yaml.safe_dump(doc, sort_keys=False), name=NAME)
        sz = model_sizes(doc)
        tokens, targets = make_batch(sz, 8, 0)
        state = workdir / "volunteer"
        log = (workdir / "join.log").open("wb")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "dcnr.cli.main", "join", cluster.address, "--ca-fingerprint",
                                 cluster.ca_fingerprint, "--state-dir", str(state), "--max-threads", str(threads)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            cluster.wait_for(lambda: any(p.state == "alive" for p in cluster.client.list_pnodes()),
                             "the volunteer joining", 120)
            joined = time.perf_counter() - t0
            train_step(cluster, tokens, targets, 1)  # its first micro-batch: everything is placed on it
            first = time.perf_counter() - t0
            say(f"  join: registered after {joined:.1f} s, first micro-batch computed after {first:.1f} s")
            return first
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    finally:
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per cluster (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per cluster (default 1)")
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per PNode (default 1)")
    ap.add_argument("--join", action="store_true", help="also time `dcnr join` to the first micro-batch")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object (progress to stderr)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.threads < 1:
        ap.error("--steps, --batch-size and --threads must be at least 1, --warmup at least 0")
    out = sys.stderr if args.json else sys.stdout

    def say(*parts: Any) -> None:
        print(*parts, file=out, flush=True)

    torch.set_num_threads(args.threads)
    doc = load_doc()
    doc["name"] = NAME
    sz = model_sizes(doc)
    say(f"topology 1: {sz['blocks']} blocks x {sz['heads']} heads, dim {sz['dim']}; float32, batch "
        f"{args.batch_size} x {sz['seq_len']}; 2 PNodes x {args.threads} thread(s) on {os.cpu_count()} CPUs; "
        f"{args.warmup} warm-up + {args.steps} timed steps each, alternating")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        clusters = {"direct": make(Path(tmp) / "direct", args.threads, relayed=False),
                    "relayed": make(Path(tmp) / "relayed", args.threads, relayed=True)}
        try:
            for name, cluster in clusters.items():
                t0 = time.perf_counter()
                start(cluster, doc, relay=name == "relayed")
                say(f"{name}: PNodes at {', '.join(p.address for p in cluster.client.list_pnodes())} "
                    f"({time.perf_counter() - t0:.1f} s)")
            relayed = clusters["relayed"]
            times: dict[str, list[float]] = {n: [] for n in clusters}
            before: tuple[int, int] = (0, 0)
            for i in range(args.warmup + args.steps):
                tokens, targets = make_batch(sz, args.batch_size, i)
                if i == args.warmup:
                    before = settled_relay_bytes(relayed)
                order = list(clusters) if i % 2 == 0 else list(reversed(clusters))
                losses = {}
                for name in order:
                    t = time.perf_counter()
                    losses[name] = train_step(clusters[name], tokens, targets, 1)
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - t)
                say(f"  {'warm-up' if i < args.warmup else 'step   '} {i:2d}: " + ", ".join(
                    f"{n} loss {losses[n]:.4f}" + (f" {times[n][-1]:.2f} s" if i >= args.warmup else "")
                    for n in clusters))
            after = settled_relay_bytes(relayed)
            minimum = relayed_minimum(relayed, sz, args.batch_size)
        finally:
            for cluster in clusters.values():
                cluster.close()
        med = {n: statistics.median(t) for n, t in times.items()}
        per_step = [(a - b) / args.steps for a, b in zip(after, before, strict=True)]
        figures = {
            "step_seconds": {n: {"median": med[n], "min": min(times[n]), "max": max(times[n])} for n in times},
            "time_ratio": med["relayed"] / med["direct"],
            "relay_bytes_per_step": per_step[0], "relay_hop_bytes_per_step": per_step[1],
            "minimum_bytes_per_step": minimum, "bytes_ratio": per_step[1] / minimum,
        }
        if args.join:
            figures["join_to_first_micro_batch_seconds"] = join_time(Path(tmp) / "join", doc, args.threads, say)
    if args.json:
        print(json.dumps(figures))
        return
    s = figures["step_seconds"]
    say(f"step time: direct {s['direct']['median']:.2f} s ({s['direct']['min']:.2f}-{s['direct']['max']:.2f}), "
        f"relayed {s['relayed']['median']:.2f} s ({s['relayed']['min']:.2f}-{s['relayed']['max']:.2f}): "
        f"{figures['time_ratio']:.2f}x (target <= {TARGET_TIME_RATIO}x)")
    say(f"through the relay per step: {figures['relay_bytes_per_step'] / 2**20:.2f} MiB, of which hops "
        f"{figures['relay_hop_bytes_per_step'] / 2**20:.2f} MiB; the tensors p1 must exchange: "
        f"{figures['minimum_bytes_per_step'] / 2**20:.2f} MiB -> {figures['bytes_ratio']:.3f}x "
        f"(target {TARGET_BYTES_RATIO:.2f}x, up to hop headers and acknowledgements)")
    if "join_to_first_micro_batch_seconds" in figures:
        say(f"dcnr join to first micro-batch: {figures['join_to_first_micro_batch_seconds']:.1f} s "
            f"(target <= {TARGET_JOIN_SECONDS:.0f} s)")


def relayed_minimum(cluster: LocalCluster, sz: dict[str, int], batch: int) -> int:
    """The least a relay must carry for p1 per step: the raw activations and gradients crossing between p0 and
    p1 (every crossing edge has p1 at one end: there are two PNodes) and the network's inputs sent to p1."""
    spec = cluster.orch.driver.network(NAME).spec
    placement = {v: cluster.name_of(p) for v, p in cluster.orch.store.placements(NAME).items()}
    crossing = sum(r["activation_bytes"] + r["gradient_bytes"] for r in crossing_traffic(spec, placement, batch))
    tokens, targets = make_batch(sz, batch, 0)
    given = {"tokens": tokens, "targets": targets}
    to = input_traffic(spec, given, placement)["to"]
    to_p1 = sum(t.numel() * t.element_size() for name, t in given.items() if to.get(name) == "p1")
    return crossing + to_p1


if __name__ == "__main__":
    main()
