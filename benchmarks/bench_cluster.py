"""Training-step benchmark: SPEC §13 topology 1 as one PyTorch module, on `LocalExecutor`, and on 2 PNodes.

Topology 1 (examples/networks/topology1.yml, precision overridden to float32) is trained
on CPU three ways, alternating step by step in one run so that all see the same machine:

  monolithic  the model as one `torch.nn.Module` trained with one `torch.optim.Adam`
              (the module of benchmarks/bench_topology1.py, started from the executor's
              initial parameters);
  local       `dcnr.LocalExecutor.train_step`, every VNode in this process;
  cluster     one step across 2 PNodes on loopback: an `Orchestrator` runs in this
              process and drives the step (`driver.train_step`, 1 micro-batch); each
              PNode is a child process of this script (`--pnode-child`), so activations
              and gradients between them travel over gRPC.

Every variant gets the same number of torch threads (`--threads`, default 1: this is
meant for small machines, where 2 PNodes x N threads already oversubscribe the CPUs).
The batches are random tokens drawn with a fixed seed, the same for every variant.

Besides step times it reports the bytes the PNodes sent each other per step (serialized
hops, as counted by `PNodeRuntime.stats`) against the minimum: the raw bytes of the
activations (and, where both ends are in the backward set, of the gradients) on the
edges that cross PNodes, computed from the placement and the network's shapes. Peak
RSS is given per PNode process, and for the monolithic module (and the executor) in a
fresh child process that trains only that variant (bench_topology1's memory child).

Run from the repository root:

    .venv/bin/python benchmarks/bench_cluster.py                # 1 warm-up + 5 timed steps
    .venv/bin/python benchmarks/bench_cluster.py --steps 10 --threads 2 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_topology1 import (
    Monolithic,
    copy_params,
    load_doc,
    make_batch,
    make_executor,
    measure_memory,
    model_sizes,
    peak_rss_mib,
)

from dcnr.cluster import LocalCluster
from dcnr.runtime.allocator import keep_freed_memory

NAME = "topology1"
PNODES = ["p0", "p1"]
TARGET_TIME_RATIO = 1.10  # cluster / monolithic, median step time
TARGET_LOCAL_RATIO = 1.05  # LocalExecutor / monolithic
TARGET_WIRE_RATIO = 1.01  # bytes sent between PNodes / minimum (1.00 up to the hops' headers)
TARGET_BALANCE = 0.20  # with several micro-batches: |busy p0 - busy p1| / the larger
TARGET_SHAPED_RATIO = 1.3  # shaped links / unshaped, median step time
BYTES = {"float32": 4, "fp16": 2, "bf16": 2}
INT64_OUTPUTS = {"tokenizer"}  # node types whose outputs are token ids (int64)


# -- the PNode child process -------------------------------------------------------------------
def pnode_child(address: str, name: str, stats_file: str, state_dir: str, ca_fingerprint: str, threads: int,
                default_malloc: bool, shape: str = "") -> None:
    """Run one PNode until SIGTERM/SIGINT (or until the parent goes away), then write its stats. With
    `shape` ("RTT_MS:MBIT:JITTER_MS:SEED"), its hops to other PNodes go through shaped links."""
    from dcnr.pnode.agent import PNode
    from dcnr.transport.shaping import LinkShape, ShapedHopTransport

    if not default_malloc:
        keep_freed_memory()
    torch.set_num_threads(threads)
    parent = os.getppid()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pnode = PNode(address, state_dir=state_dir, ca_fingerprint=ca_fingerprint, name=name, threads=threads,
                  set_torch_threads=True)
    pnode.start()
    if shape:  # before the first step: hops are sent through `runtime.hops`
        rtt, mbit, jitter, seed = (float(x) for x in shape.split(":"))
        pnode.runtime.hops = ShapedHopTransport(pnode.hops, LinkShape(rtt / 1000, mbit * 1e6, jitter / 1000),
                                                seed=int(seed) * 1000 + int(name.lstrip("p") or 0))
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:  # the benchmark died without stopping us: leave too
                break
    finally:
        pnode.stop()
        stats = {**pnode.runtime.stats, "bytes_sent": pnode.hops.bytes_sent,  # serialized hops, as sent
                 "peak_rss_bytes": int(peak_rss_mib() * 2**20),  # VmHWM: starts afresh at exec
                 "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                 "torch_threads": torch.get_num_threads()}
        tmp = stats_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(stats))
        os.replace(tmp, stats_file)


# -- the cluster, seen from the benchmark ------------------------------------------------------------
def make_cluster(workdir: Path, threads: int, step_timeout: float, default_malloc: bool,
                 pnodes: list[str] = PNODES, shape: str = "") -> LocalCluster:
    """An orchestrator in this process (the benchmark drives its step directly) and PNode child processes
    of this script, which write their stats to `stats_path` when they stop."""
    def command(address: str, name: str) -> list[str]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--pnode-child", address, name,
               str(stats_path(workdir, name)), str(cluster.pnode_dir(name)), cluster.ca_fingerprint,
               "--threads", str(threads)]
        cmd += ["--shape-links", shape] if shape else []
        return [*cmd, "--default-malloc"] if default_malloc else cmd

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # heartbeats every 30 s: a step keeps the PNodes' CPUs busy for seconds
    cluster = LocalCluster(workdir, pnodes, heartbeat_interval=30.0, step_timeout=step_timeout, embedded=True,
                           pnode_command=command, env=env, start_timeout=120.0)
    return cluster


def stats_path(workdir: Path, pid: str) -> Path:
    return workdir / f"{pid}.stats.json"


def train_step(cluster: LocalCluster, tokens: torch.Tensor, targets: torch.Tensor, micro_batches: int) -> float:
    """One driver step, watched: a PNode process that dies fails it at once, not at the step timeout."""
    cluster.check()
    result: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            result["costs"] = cluster.orch.driver.train_step(NAME, {"tokens": tokens, "targets": targets},
                                                             micro_batches)[0]
        except BaseException as exc:  # handed to the waiting thread
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="bench-step", daemon=True).start()
    while not done.wait(0.2):
        cluster.check()
    if "error" in result:
        raise result["error"]
    return float(result["costs"]["ce_loss"])


# -- the minimum traffic between PNodes -----------------------------------------------------------------
def value_bytes(node: Any) -> int:
    return 8 if node.type in INT64_OUTPUTS else BYTES[node.activation_precision]


def crossing_traffic(spec: Any, placement: dict[str, str], batch: int) -> list[dict[str, Any]]:
    """Per edge of a training step between two PNodes: raw activation bytes forward, gradient bytes
    backward, per step. Edges a training step never uses (to a node kept for inference only, like an
    LM head whose training runs fused) carry nothing. `output_shapes` are per sample (no batch axis),
    hence the factor `batch`."""
    from dcnr.runtime.router import Router
    from dcnr.transport.messages import Run

    router = Router(spec)
    live, needed = router.live, router.needed(Run(spec.name, "", 0, "train"))
    rows = []
    for e in spec.edges:
        if placement[e.src] == placement[e.dst] or e.dst not in needed:
            continue
        src = spec.nodes[e.src]
        shape = src.output_shapes[e.src_slot]
        if shape is None:
            raise ValueError(f"edge {e}: the output shape of {e.src} is unknown, cannot compute its size")
        act = batch * math.prod(shape) * value_bytes(src)
        grad = act if (e.src in live and e.dst in live) else 0
        rows.append({"edge": str(e), "from": placement[e.src], "to": placement[e.dst],
                     "shape": [batch, *shape], "activation_bytes": act, "gradient_bytes": grad})
    return rows


def input_traffic(spec: Any, batch: dict[str, torch.Tensor], placement: dict[str, str]) -> dict[str, Any]:
    """What the orchestrator sends the PNodes per step (the network inputs), raw and as hops."""
    from dcnr.transport.grpc.pnode import hop_to_bytes
    from dcnr.transport.messages import Hop

    raw = wire = 0
    to: dict[str, str] = {}
    for b in spec.inputs:
        t = batch[b.name]
        raw += t.numel() * t.element_size()
        wire += len(hop_to_bytes(Hop(NAME, f"train/{NAME}/0/00000000", 0, "fwd", b.node_id, b.slot_id, t)))
        to[b.name] = placement[b.node_id]
    return {"raw_bytes": raw, "wire_bytes": wire, "to": to}


# -- main --------------------------------------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per variant (default 1)")
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--seq-len", type=int, default=128,
                    help="tokens per sequence; topology 1 is built for 128, and only 128 is accepted")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per process: each PNode, and this process for monolithic/local (default 1)")
    ap.add_argument("--micro-batches", type=int, default=1,
                    help="micro-batches per step for the local and cluster runs (pipelined across PNodes)")
    ap.add_argument("--step-timeout", type=float, default=300.0, help="seconds before a cluster step fails")
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the child processes that measure peak RSS of the monolithic module and executor")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc as it is in every process (by default it keeps freed memory)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object (progress to stderr)")
    ap.add_argument("--shaped", metavar="RTT_MS:MBIT:JITTER_MS", default="",
                    help="instead: compare a cluster whose PNode-to-PNode links have this round trip, bandwidth and "
                         "jitter with an unshaped one, step by step (e.g. 50:100:5 with --pnodes 4 "
                         "--micro-batches 8)")
    ap.add_argument("--pnodes", type=int, default=2, help="PNodes per cluster (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shaped links' jitter (printed)")
    ap.add_argument("--shape-links", default="", help=argparse.SUPPRESS)
    ap.add_argument("--pnode-child", nargs=5, metavar=("ADDRESS", "NAME", "STATSFILE", "STATE_DIR", "CA_FINGERPRINT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    if args.pnode_child:
        address, name, stats_file, state_dir, fingerprint = args.pnode_child
        pnode_child(address, name, stats_file, state_dir, fingerprint, threads=args.threads,
                    default_malloc=args.default_malloc, shape=args.shape_links)
        return
    if args.shaped:
        shaped_main(args)
        return
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        ap.error("--steps and --batch-size must be at least 1, --warmup at least 0")

    out = sys.stderr if args.json else sys.stdout

    def say(*parts: Any) -> None:
        print(*parts, file=out, flush=True)

    pinned = not args.default_malloc and keep_freed_memory()
    torch.set_num_threads(args.threads)
    doc = load_doc()  # float32
    doc["name"] = NAME
    sz = model_sizes(doc)
    if args.seq_len != sz["seq_len"]:
        ap.error(f"--seq-len must be {sz['seq_len']}: topology 1's context length (RoPE tables, shapes) is fixed")
    batch = args.batch_size
    say(f"topology 1: {sz['blocks']} blocks x {sz['heads']} heads, dim {sz['dim']}, context {sz['seq_len']}, "
        f"vocab {sz['vocab']}; float32, batch {batch} x {sz['seq_len']} tokens, "
        f"{args.micro_batches} micro-batch(es) for local and cluster")
    say(f"torch {torch.__version__}, {args.threads} thread(s) per process on {os.cpu_count()} CPUs "
        f"(load average {os.getloadavg()[0]:.2f}); {args.warmup} warm-up + {args.steps} timed steps each, "
        f"alternating; malloc {'keeps freed memory' if pinned else 'as default'}")

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        # the PNodes start before this process grows: a child's figures never include the parent's pages
        if args.batch_size % args.micro_batches:
            ap.error("--batch-size must be a multiple of --micro-batches")
        cluster = make_cluster(Path(tmp), args.threads, args.step_timeout, args.default_malloc)
        try:
            t0 = time.perf_counter()
            cluster.start()
            say(f"cluster: orchestrator at {cluster.address}, PNodes {', '.join(PNODES)} registered "
                f"in {time.perf_counter() - t0:.1f} s")
            cluster.client.create_network(yaml.safe_dump(doc, sort_keys=False), name=NAME)

            t0 = time.perf_counter()
            ex = make_executor(doc)
            torch.manual_seed(0)
            mono = Monolithic(sz)
            copy_params(mono.model, ex.parameters(), sz)
            say(f"local executor: {len(ex.vnodes)} VNodes; monolithic: "
                f"{sum(p.numel() for p in mono.model.parameters()) / 1e6:.1f} M parameters "
                f"(both built in {time.perf_counter() - t0:.1f} s, same initial parameters)")

            runners = {
                "monolithic": mono.train_step,
                "local": lambda t, y: float(ex.train_step({"tokens": t, "targets": y},
                                                           micro_batches=args.micro_batches)["ce_loss"]),
                "cluster": lambda t, y: train_step(cluster, t, y, args.micro_batches),
            }
            names = list(runners)
            times: dict[str, list[float]] = {k: [] for k in runners}
            warm_times: dict[str, list[float]] = {k: [] for k in runners}
            losses: dict[str, list[float]] = {k: [] for k in runners}
            for i in range(args.warmup + args.steps):
                tokens, targets = make_batch(sz, batch, i)  # seeded per step: the same batch for everyone
                order = names[i % 3:] + names[:i % 3]  # rotate who goes first
                for name in order:
                    start = time.perf_counter()
                    loss = runners[name](tokens, targets)
                    elapsed = time.perf_counter() - start
                    losses[name].append(loss)
                    (times if i >= args.warmup else warm_times)[name].append(elapsed)
                    if elapsed > 60:
                        say(f"  warning: one {name} step took {elapsed:.0f} s")
                tag = "warm-up" if i < args.warmup else "step   "
                say(f"  {tag} {i:2d}: " + ", ".join(
                    f"{n} loss {losses[n][-1]:.4f} {(times if i >= args.warmup else warm_times)[n][-1]:.3f} s"
                    for n in names))

            spec = cluster.orch.driver.network(NAME).spec
            placement = {v: cluster.name_of(p) for v, p in cluster.orch.store.placements(NAME).items()}
            if set(placement) != set(spec.nodes):
                raise RuntimeError(f"placement of {NAME!r} covers {len(placement)} of {len(spec.nodes)} VNodes")
            cluster.stop_pnodes(grace=30.0)
            stats = {p: json.loads(stats_path(Path(tmp), p).read_text(encoding="utf-8"))
                     for p in PNODES if stats_path(Path(tmp), p).exists()}
        finally:
            cluster.close()
    missing = [p for p in PNODES if p not in stats]
    if missing:
        raise SystemExit(f"PNode(s) {', '.join(missing)} wrote no stats")

    mem: dict[str, dict[str, float]] = {}
    if not args.no_memory:
        say(f"peak RSS of monolithic and executor: a fresh child process each, "
            f"{args.warmup + args.steps} training steps")
        ns = argparse.Namespace(batch=batch, threads=args.threads, mem_steps=args.warmup + args.steps,
                             default_malloc=args.default_malloc)
        for variant, key in (("monolithic", "monolithic"), ("executor", "local")):
            mem[key] = measure_memory(variant, ns)

    # -- figures --
    total_steps = args.warmup + args.steps
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_local, ratio_cluster = med["local"] / med["monolithic"], med["cluster"] / med["monolithic"]
    crossing = crossing_traffic(spec, placement, batch)
    min_act = sum(r["activation_bytes"] for r in crossing)
    min_grad = sum(r["gradient_bytes"] for r in crossing)
    minimum = min_act + min_grad
    sent = sum(stats[p]["bytes_sent"] for p in PNODES)
    sent_tensor = sum(stats[p]["tensor_bytes_sent"] for p in PNODES)
    hops = sum(stats[p]["hops_sent"] for p in PNODES)
    wire_per_step = sent / total_steps
    wire_ratio = wire_per_step / minimum if minimum else float("inf")
    tokens, targets = make_batch(sz, batch, 0)
    inputs = input_traffic(spec, {"tokens": tokens, "targets": targets}, placement)
    hosted = {p: sum(1 for v in placement.values() if v == p) for p in PNODES}
    peak = {p: stats[p]["peak_rss_bytes"] for p in PNODES}
    figures = {
        "setup": {"batch_size": batch, "seq_len": sz["seq_len"], "threads": args.threads, "cpus": os.cpu_count(),
                  "warmup": args.warmup, "steps": args.steps, "malloc_keeps_freed": bool(pinned)},
        "step_seconds": {k: {"median": med[k], "min": min(v), "max": max(v), "all": v} for k, v in times.items()},
        "warmup_seconds": warm_times,
        "losses": losses,
        "ratio_local_to_monolithic": ratio_local,
        "ratio_cluster_to_monolithic": ratio_cluster,
        "target_cluster_ratio": TARGET_TIME_RATIO,
        "placement": {"vnodes_per_pnode": hosted, "crossing_edges": crossing},
        "wire": {"bytes_sent_per_step": wire_per_step, "tensor_bytes_sent_per_step": sent_tensor / total_steps,
                 "hops_sent_per_step": hops / total_steps,
                 "minimum_bytes_per_step": minimum, "minimum_activation_bytes": min_act,
                 "minimum_gradient_bytes": min_grad, "ratio_to_minimum": wire_ratio,
                 "target_ratio": TARGET_WIRE_RATIO, "steps_counted": total_steps,
                 "per_pnode": {p: {k: stats[p][k] for k in ("hops_sent", "bytes_sent", "tensor_bytes_sent",
                                                            "local_hops", "refused")} for p in PNODES}},
        "orchestrator_inputs_per_step": inputs,
        "peak_rss_bytes": {**{f"pnode {p}": peak[p] for p in PNODES},
                           **{k: int(v["peak_mib"] * 2**20) for k, v in mem.items()}},
        "pnode_ru_maxrss_bytes": {p: stats[p]["ru_maxrss_bytes"] for p in PNODES},
        "pnode_torch_threads": {p: stats[p]["torch_threads"] for p in PNODES},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return

    print()
    print(f"{'variant':<11} {'median step':>12} {'min':>9} {'max':>9} {'tokens/s':>9} {'peak RSS':>22}")
    tok = batch * sz["seq_len"]
    for k in names:
        v = times[k]
        if k == "cluster":
            rss = " + ".join(f"{peak[p] / 2**20:.0f}" for p in PNODES) + " MiB"
        else:
            rss = f"{mem[k]['peak_mib']:.0f} MiB" if k in mem else "-"
        print(f"{k:<11} {med[k]:10.3f} s {min(v):7.3f} s {max(v):7.3f} s {tok / med[k]:9.0f} {rss:>22}")
    print(f"ratio local / monolithic (median step): {ratio_local:.3f}  (target <= {TARGET_LOCAL_RATIO}: "
          f"{'ok' if ratio_local <= TARGET_LOCAL_RATIO else 'above target'})")
    print(f"ratio cluster / monolithic (median step): {ratio_cluster:.3f}  (target <= {TARGET_TIME_RATIO}: "
          f"{'ok' if ratio_cluster <= TARGET_TIME_RATIO else 'above target'})")
    print()
    print("placement: " + ", ".join(f"{p} {n} VNodes" for p, n in hosted.items())
          + f"; {len(crossing)} edge(s) cross PNodes:")
    for r in crossing:
        print(f"  {r['edge']:<34} {r['from']}->{r['to']}  {'x'.join(map(str, r['shape'])):<14} "
              f"fwd {mib(r['activation_bytes']):>10}  bwd {mib(r['gradient_bytes']):>10}")
    print(f"wire between PNodes per step: {mib(wire_per_step)} in {hops / total_steps:.1f} hops "
          f"(tensor payload {mib(sent_tensor / total_steps)}; totals over {total_steps} steps incl. warm-up)")
    print(f"minimum per step: {mib(minimum)} (activations {mib(min_act)}, gradients {mib(min_grad)})")
    print(f"ratio wire / minimum: {wire_ratio:.3f}  (target <= {TARGET_WIRE_RATIO}: "
          f"{'ok' if wire_ratio <= TARGET_WIRE_RATIO else 'above target'})")
    print(f"orchestrator -> PNodes inputs per step (not in the ratio): {mib(inputs['wire_bytes'])} as hops, "
          f"{mib(inputs['raw_bytes'])} raw (" + ", ".join(f"{k} to {v}" for k, v in inputs["to"].items()) + ")")
    print("peak RSS: " + ", ".join(f"PNode {p} {peak[p] / 2**20:.0f} MiB" for p in PNODES)
          + "".join(f", {k} {v['peak_mib']:.0f} MiB" for k, v in mem.items())
          + "  (VmHWM of each process; PNode ru_maxrss: "
          + ", ".join(f"{p} {stats[p]['ru_maxrss_bytes'] / 2**20:.0f} MiB" for p in PNODES) + ")")
    busy = {p: stats[p]["busy_seconds"] / total_steps for p in PNODES}
    mean_step = statistics.mean(times["cluster"] + warm_times["cluster"])
    spread = (max(busy.values()) - min(busy.values())) / max(busy.values())
    print("PNode compute per step: " + ", ".join(f"{p} {b:.3f} s" for p, b in busy.items())
          + f"; sum / cluster step = {sum(busy.values()) / mean_step:.2f} (above 1: PNodes computed at the same time)"
          + f"; imbalance {spread:.1%} (target <= {TARGET_BALANCE:.0%} with several micro-batches)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def shaped_main(args: argparse.Namespace) -> None:
    """Topology 1 on `--pnodes` PNodes twice, one cluster with shaped PNode-to-PNode links and one without,
    stepping them in turn: step times, bytes per step and each PNode's busy fraction."""
    rtt, mbit, jitter = (float(x) for x in args.shaped.split(":"))
    pnodes = [f"p{i}" for i in range(args.pnodes)]
    torch.set_num_threads(args.threads)
    doc = load_doc()
    doc["name"] = NAME
    sz = model_sizes(doc)
    print(f"topology 1, float32, batch {args.batch_size} x {sz['seq_len']} in {args.micro_batches} micro-batches on "
          f"{args.pnodes} PNodes; shaped links: {rtt:g} ms round trip, {mbit:g} Mbit/s, jitter {jitter:g} ms "
          f"(seed {args.seed}); {args.warmup} warm-up + {args.steps} timed steps each, alternating; "
          f"{args.threads} torch thread(s) per process on {os.cpu_count()} CPUs", flush=True)
    times: dict[str, list[float]] = {"unshaped": [], "shaped": []}
    spent = {"unshaped": 0.0, "shaped": 0.0}  # every step's wall time, warm-up included
    losses: dict[str, list[float]] = {"unshaped": [], "shaped": []}
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-shaped-") as tmp:
        clusters = {
            "unshaped": make_cluster(Path(tmp) / "unshaped", args.threads, args.step_timeout, args.default_malloc,
                                     pnodes),
            "shaped": make_cluster(Path(tmp) / "shaped", args.threads, args.step_timeout, args.default_malloc,
                                   pnodes, shape=f"{rtt}:{mbit}:{jitter}:{args.seed}"),
        }
        try:
            for c in clusters.values():
                c.start()
                c.client.create_network(yaml.safe_dump(doc, sort_keys=False), name=NAME)
            for i in range(args.warmup + args.steps):
                tokens, targets = make_batch(sz, args.batch_size, i)
                for name in (list(clusters) if i % 2 == 0 else list(reversed(clusters))):
                    start = time.perf_counter()
                    losses[name].append(train_step(clusters[name], tokens, targets, args.micro_batches))
                    elapsed = time.perf_counter() - start
                    spent[name] += elapsed
                    if i >= args.warmup:
                        times[name].append(elapsed)
                print(f"  step {i}: " + ", ".join(f"{n} loss {losses[n][-1]:.4f}" + (
                    f" {times[n][-1]:.3f} s" if i >= args.warmup else " (warm-up)") for n in clusters), flush=True)
            placements = {n: {v: c.name_of(p) for v, p in c.orch.store.placements(NAME).items()}
                          for n, c in clusters.items()}
            for name, c in clusters.items():
                c.stop_pnodes(grace=30.0)
                stats[name] = {p: json.loads(stats_path(c.state_dir, p).read_text(encoding="utf-8"))
                               for p in pnodes}
        finally:
            for c in clusters.values():
                c.close()
    total = args.warmup + args.steps
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = med["shaped"] / med["unshaped"]
    same = losses["shaped"] == losses["unshaped"]
    print()
    for name in clusters:
        sent = sum(s["bytes_sent"] for s in stats[name].values()) / total
        busy = {p: stats[name][p]["busy_seconds"] for p in pnodes}
        print(f"{name:<9} median step {med[name]:.3f} s (min {min(times[name]):.3f}, max {max(times[name]):.3f}); "
              f"{sent / 2**20:.2f} MiB between PNodes per step; VNodes " + ", ".join(
                  f"{p} {sum(1 for v in placements[name].values() if v == p)}" for p in pnodes))
        print("          busy fraction (VNode compute / the cluster's step time, warm-up included): " + ", ".join(
            f"{p} {busy[p] / spent[name]:.2f}" for p in pnodes))
    print(f"ratio shaped / unshaped (median step): {ratio:.3f}  (target <= {TARGET_SHAPED_RATIO}: "
          f"{'ok' if ratio <= TARGET_SHAPED_RATIO else 'above target'}); losses identical: {same}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
