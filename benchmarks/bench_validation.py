"""Validation benchmark: what commitments and re-execution cost, and how fast a liar is caught.

SPEC §13 topology 1 (float32, as bench_cluster.py builds it) trains on 3 PNodes (child processes
of bench_cluster.py; an orchestrator in this process drives the steps). Four policies take turns
in blocks of `--steps` steps, `--rounds` times, on the same network and placement:

  off          nothing committed, nothing verified;
  commit-only  every step committed and cross-checked, nothing re-executed (a sample rate of 1e-9):
               the cost of commitments alone;
  sample:0.05  the default: commitments, and 5 % of the work units re-executed by another PNode;
  full         every unit re-executed once.

A block's time per step includes waiting, after its last step, until every verification it started
has finished (verification runs beside training, so its cost lands on the next steps otherwise).
Ratios are medians over rounds, against `off`; ranges are printed. The PNodes' own accounting gives
the CPU seconds they spent on commitments (digests, signatures, evidence) and on re-execution.

Also measured: Freivalds' check of topology 1's linear products against recomputing them. And from
the placement this run used and the validator's draw (`Policy.rate_for`, unpredictable per unit):
the distribution of steps from a persistent liar's first lie to its detection at P = 0.05, and of
one that lies on 5 % of its units, by simulating the draw (`--trials` times) - computed, not timed.

Run from the repository root:

    .venv/bin/python benchmarks/bench_validation.py                  # 3 rounds x 3 steps per policy
    .venv/bin/python benchmarks/bench_validation.py --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cluster import NAME, make_cluster, stats_path, train_step
from bench_topology1 import load_doc, make_batch, model_sizes

from dcnr.validation.freivalds import check_linear
from dcnr.validation.policy import Policy

PNODES = ["p0", "p1", "p2"]
POLICIES = {"off": None, "commit-only": Policy("sample", 1e-9), "sample:0.05": Policy.parse("sample:0.05"),
            "full": Policy.parse("full")}
TARGETS = {"commit-only": 1.03, "sample:0.05": 1.10, "full": 2.2}


def run_block(cluster: Any, policy: Policy | None, steps: int, first: int, sz: dict[str, int], batch: int) -> float:
    """`steps` driver steps under `policy`, then until its verifications are done; seconds per step."""
    driver = cluster.orch.driver
    started = time.perf_counter()
    for i in range(steps):
        tokens, targets = make_batch(sz, batch, first + i)
        if policy is None:
            train_step(cluster, tokens, targets, 1)
        else:
            cluster.check()
            driver.train_step(NAME, {"tokens": tokens, "targets": targets}, 1, validation=policy)
    if policy is not None:
        cluster.orch.validator.wait(NAME, 600)
    return (time.perf_counter() - started) / steps


def freivalds_cost(sz: dict[str, int], batch: int, repeats: int = 5) -> list[dict[str, Any]]:
    """Freivalds' check against the product itself, for topology 1's linear shapes (batch x context rows)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    dim = sz["dim"]
    for k, n in sorted({(dim, dim), (dim, 4 * dim), (4 * dim, dim), (dim, sz["vocab"])}):
        x = torch.randn(batch * sz["seq_len"], k, generator=g)
        w, b = torch.randn(n, k, generator=g) * 0.02, torch.zeros(n)
        y = torch.nn.functional.linear(x, w, b)
        times = {}
        for name, fn in (("product", lambda x=x, w=w, b=b: torch.nn.functional.linear(x, w, b)),
                         ("freivalds", lambda x=x, w=w, b=b, y=y: check_linear(x, w, b, y, g))):
            fn()
            spent = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                spent.append(time.perf_counter() - t0)
            times[name] = statistics.median(spent)
        rows.append({"in": k, "out": n, "rows": x.shape[0], "product_ms": times["product"] * 1e3,
                     "freivalds_ms": times["freivalds"] * 1e3, "ratio": times["freivalds"] / times["product"]})
    return rows


def detection(units: int, rate: float, lie_rate: float, trials: int, seed: int) -> dict[str, float]:
    """Steps from a liar's first lie to the first sampled lie, when it hosts `units` units per step and lies on
    each with probability `lie_rate` (1: always), each unit drawn with probability `rate`."""
    rnd = random.Random(seed)
    found = []
    for _ in range(trials):
        step, lied = 0, False
        while True:
            lies = sum(rnd.random() < lie_rate for _ in range(units))
            lied = lied or lies > 0
            if lied and any(rnd.random() < rate for _ in range(lies)):
                found.append(step)
                break
            if lied:
                step += 1
    found.sort()
    return {"same_step": sum(s == 0 for s in found) / trials, "median": float(statistics.median(found)),
            "p90": float(found[int(0.9 * trials)]), "p99": float(found[int(0.99 * trials)]),
            "mean": statistics.fmean(found)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="steps per block (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per policy, taking turns (default 3)")
    ap.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per PNode process (default 1)")
    ap.add_argument("--trials", type=int, default=20000, help="simulated liars per detection figure")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulated draws (printed)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object (progress to stderr)")
    args = ap.parse_args()
    out = sys.stderr if args.json else sys.stdout

    def say(*parts: Any) -> None:
        print(*parts, file=out, flush=True)

    torch.set_num_threads(args.threads)
    doc = load_doc()
    doc["name"] = NAME
    sz = model_sizes(doc)
    say(f"topology 1 on {len(PNODES)} PNodes, float32, batch {args.batch_size} x {sz['seq_len']}; {args.rounds} rounds "
        f"x {args.steps} steps per policy; {args.threads} thread(s) per PNode on {torch.get_num_threads()}/"
        f"{os.cpu_count()} CPUs")
    times: dict[str, list[float]] = {p: [] for p in POLICIES}
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        cluster = make_cluster(Path(tmp), args.threads, 600.0, default_malloc=False, pnodes=PNODES)
        try:
            cluster.start()
            cluster.client.create_network(yaml.safe_dump(doc, sort_keys=False), name=NAME)
            step = 0
            say("  warm-up: one step per policy")
            for policy in POLICIES.values():
                run_block(cluster, policy, 1, step, sz, args.batch_size)
                step += 1
            names = list(POLICIES)
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    t = run_block(cluster, POLICIES[name], args.steps, step, sz, args.batch_size)
                    step += args.steps
                    times[name].append(t)
                say(f"  round {r}: " + ", ".join(f"{n} {times[n][-1]:.2f} s/step" for n in names))
            placement = cluster.orch.store.placements(NAME)
            spec = cluster.orch.driver.network(NAME).spec
            events = cluster.orch.standings.events(network=NAME, limit=10_000)
            driver_share = dict(cluster.orch.validator.stats)
            cluster.stop_pnodes(grace=30.0)
            stats = {p: json.loads(stats_path(Path(tmp), p).read_text()) for p in PNODES
                     if stats_path(Path(tmp), p).exists()}
        finally:
            cluster.close()
    committed_steps = (1 + args.rounds * args.steps) * 3  # every policy but off commits
    base = statistics.median(times["off"])
    figures: dict[str, Any] = {"seconds_per_step": {n: {"median": statistics.median(t), "min": min(t), "max": max(t)}
                                                    for n, t in times.items()}}
    figures["ratio_to_off"] = {n: statistics.median(t) / base for n, t in times.items() if n != "off"}
    figures["ratio_range"] = {n: [min(t) / base, max(t) / base] for n, t in times.items() if n != "off"}
    commit = sum(s.get("commit_seconds", 0.0) for s in stats.values())
    figures["commit_cpu_seconds_per_step"] = commit / committed_steps
    figures["commit_cpu_share_of_off_step"] = commit / committed_steps / base
    figures["verify_cpu_seconds"] = {p: s.get("verify_seconds", 0.0) for p, s in stats.items()}
    figures["verified_units"] = {p: s.get("verified_units", 0) for p, s in stats.items()}
    figures["orchestrator_seconds_per_committed_step"] = driver_share["after_step_seconds"] / committed_steps
    figures["sampled_units"] = driver_share["sampled_units"]
    figures["verdicts"] = {v: sum(e.verdict == v for e in events) for v in sorted({e.verdict for e in events})}
    units_per_pnode = {p: len({"+".join(sorted(spec.tie_group(v))) for v, q in placement.items() if q == p})
                       for p in set(placement.values())}
    figures["units_per_pnode"] = units_per_pnode
    liar_units = min(units_per_pnode.values())  # the least exposed PNode: the slowest to catch
    figures["detection_persistent_p0.05"] = detection(liar_units, 0.05, 1.0, args.trials, args.seed)
    figures["detection_5pc_liar_p0.05"] = detection(liar_units, 0.05, 0.05, args.trials, args.seed + 1)
    figures["freivalds"] = freivalds_cost(sz, args.batch_size)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    say(f"\nseconds per step (median of {args.rounds}, range):")
    for n, t in figures["seconds_per_step"].items():
        ratio = "" if n == "off" else (f"  {figures['ratio_to_off'][n]:.3f}x off (range "
                                       f"{figures['ratio_range'][n][0]:.3f}-{figures['ratio_range'][n][1]:.3f}; "
                                       f"target <= {TARGETS[n]}x)")
        say(f"  {n:12s} {t['median']:.3f} s ({t['min']:.3f}-{t['max']:.3f}){ratio}")
    say(f"commitments: {figures['commit_cpu_seconds_per_step'] * 1e3:.0f} ms of PNode CPU per committed step, "
        f"{figures['commit_cpu_share_of_off_step'] * 100:.1f} % of an off step's wall time")
    say(f"the orchestrator's part (cross-check, draw, evidence fetched and checked) before the next step: "
        f"{figures['orchestrator_seconds_per_committed_step'] * 1e3:.0f} ms per committed step")
    say(f"re-execution: {sum(figures['verified_units'].values())} units, "
        f"{sum(figures['verify_cpu_seconds'].values()):.1f} s of PNode CPU; verdicts {figures['verdicts']}")
    for key, what in (("detection_persistent_p0.05", "a liar lying on all its"),
                      ("detection_5pc_liar_p0.05", "a liar lying on 5 % of its")):
        d = figures[key]
        say(f"{what} {liar_units} units/step, P = 0.05: caught in the step of its first lie "
            f"{d['same_step'] * 100:.1f} % of the time; steps after it: median {d['median']:.0f}, mean "
            f"{d['mean']:.1f}, p90 {d['p90']:.0f}, p99 {d['p99']:.0f} ({args.trials} simulated draws, "
            f"seed {args.seed})")
    say("Freivalds' check vs the product (topology 1 linear shapes):")
    for row in figures["freivalds"]:
        say(f"  {row['rows']} x {row['in']} -> {row['out']}: product {row['product_ms']:.2f} ms, check "
            f"{row['freivalds_ms']:.2f} ms ({row['ratio']:.2f}x)")


if __name__ == "__main__":
    main()
