"""Recovery figures: checkpoint cost, time from a PNode's death to training resuming, and the time a
restarted orchestrator takes to resume a session.

  checkpoint   topology 1 (float32) on 2 `dcnr pnode` processes after one Adam step: the time PNodes take
               to write every VNode's state to storage (file://) plus the manifest, its size, and
               the time to restore it;
  death        the tiny LM on 3 `dcnr pnode` processes, a checkpoint every 5 steps: SIGKILL one PNode
               and time until the next step completes (detection after 3 missed heartbeats, restore
               on the survivors, replay from the checkpoint); median over --runs;
  restart      SIGKILL the `dcnr orchestrator` process and start it again on the same state dir:
               time from the restart until the session reports its next step; median over --runs.

Run from the repository root:  .venv/bin/python benchmarks/bench_recovery.py [--runs 3] [--heartbeat 0.5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
from cluster_helpers import TEXTS  # noqa: E402

from dcnr.cluster import ORCHESTRATOR, LocalCluster  # noqa: E402
from dcnr.data.vocab import train_vocabulary  # noqa: E402
from dcnr.errors import DcnrError  # noqa: E402
from dcnr.orchestrator import checkpoints  # noqa: E402


def checkpoint_figures() -> dict[str, float]:
    doc = yaml.safe_load((ROOT / "examples" / "networks" / "topology1.yml").read_text())
    doc["precision"] = "float32"
    for node in doc["nodes"]:
        for key in ("precision", "param_precision", "activation_precision"):
            node.get("config", {}).pop(key, None)
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(tmp, 2, heartbeat_interval=30.0, step_timeout=600,
                                                            embedded=True) as cluster:
        orch = cluster.orch
        cluster.client.create_network(yaml.safe_dump(doc), name="t1")
        g = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, 10000, (8, 128), generator=g), torch.randint(0, 10000, (8, 128), generator=g)
        orch.driver.train_step("t1", {"tokens": x, "targets": y}, 1)  # optimizer state exists
        net = orch.driver.network("t1")
        spec = net.spec
        started = time.perf_counter()
        blobs = checkpoints.save_to_storage(orch.driver, net)
        manifest = orch.checkpoints.write_manifest(spec, net.yaml, 1, blobs, {})
        write = time.perf_counter() - started
        started = time.perf_counter()
        checkpoints.restore_manifest(orch.driver, net, manifest)
        restore = time.perf_counter() - started
        return {"write_seconds": write, "restore_seconds": restore, "bytes": float(manifest["bytes"]),
                "vnodes": float(len(manifest["vnodes"])), "parameters": float(spec.num_parameters())}


def start_session(cluster: LocalCluster, steps: int) -> str:
    """Cluster up, data and the tiny LM stored, a session (checkpoint every 5 steps) started; returns its id."""
    c = cluster.start()
    c.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
    c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
    c.create_network(ROOT / "examples" / "networks" / "tiny_lm.yml", name="lm")
    return c.create_session("lm", "d", steps, batch_size=4, micro_batches=2, seed=0, checkpoint_every=5,
                            start=True).id


def next_step_after(cluster: LocalCluster, session: str, at_step: int, action: Callable[[], None]) -> float:
    """Run `action` when `at_step` is reported; seconds from the start of the action until the next step
    event after it."""
    acted = 0.0
    while True:
        try:
            for ev in cluster.client.listen_session(session, timeout=300):
                if not acted and ev.step == at_step:
                    acted = time.perf_counter()
                    action()
                elif acted and ev.state in ("running", "completed") and ev.step:
                    return time.perf_counter() - acted
        except DcnrError:
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat interval (dead after 3 missed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ck = checkpoint_figures()
    print(f"checkpoint, topology 1 ({ck['parameters'] / 1e6:.1f} M parameters, {ck['vnodes']:.0f} VNodes, "
          f"2 PNodes, file://): {ck['bytes'] / 2**20:.0f} MiB written in {ck['write_seconds']:.2f} s "
          f"({ck['bytes'] / 2**20 / ck['write_seconds']:.0f} MiB/s); restored in {ck['restore_seconds']:.2f} s")
    deaths, restarts = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            cluster = LocalCluster(tmp, 3, heartbeat_interval=args.heartbeat, start_timeout=120)
            try:
                session = start_session(cluster, steps=40)
                deaths.append(next_step_after(cluster, session, 12, functools.partial(cluster.kill, "p1")))

                def restart(c: LocalCluster = cluster) -> None:
                    c.kill(ORCHESTRATOR)
                    c.start_orchestrator()

                restarts.append(next_step_after(cluster, session, 25, restart))
            finally:
                cluster.close()
    print(f"PNode death -> training resumed (heartbeat {args.heartbeat:g} s, dead after 3 missed, checkpoint every "
          f"5 steps): median {statistics.median(deaths):.2f} s over {len(deaths)} runs "
          f"({', '.join(f'{d:.2f}' for d in deaths)})")
    print(f"orchestrator SIGKILL + restart -> session's next step (includes the new process start-up): median "
          f"{statistics.median(restarts):.2f} s ({', '.join(f'{d:.2f}' for d in restarts)})")


if __name__ == "__main__":
    main()
