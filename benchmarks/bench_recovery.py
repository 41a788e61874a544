"""Recovery figures: checkpoint cost, time from a PNode's death to training resuming, and the time a
restarted orchestrator takes to resume a session.

  checkpoint   topology 1 (float32) on 2 in-process PNodes after one Adam step: the time PNodes take
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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
from cluster_helpers import TEXTS  # noqa: E402

from dcnr.data.vocab import train_vocabulary  # noqa: E402
from dcnr.orchestrator import checkpoints  # noqa: E402
from dcnr.orchestrator.app import Orchestrator  # noqa: E402
from dcnr.pnode.agent import PNode  # noqa: E402
from dcnr.proto.v2 import orchestrator_pb2, orchestrator_pb2_grpc  # noqa: E402


def checkpoint_figures() -> dict[str, float]:
    doc = yaml.safe_load((ROOT / "examples" / "networks" / "topology1.yml").read_text())
    doc["precision"] = "float32"
    for node in doc["nodes"]:
        for key in ("precision", "param_precision", "activation_precision"):
            node.get("config", {}).pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        orch = Orchestrator(tmp, step_timeout=600)
        orch.start("127.0.0.1:0")
        pnodes = [PNode(f"127.0.0.1:{orch.port}", pnode_id=f"p{i}", set_torch_threads=False) for i in range(2)]
        try:
            for p in pnodes:
                p.start()
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(f"127.0.0.1:{orch.port}"))
            stub.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=yaml.safe_dump(doc), name="t1"), timeout=60)
            g = torch.Generator().manual_seed(0)
            x, y = torch.randint(0, 10000, (8, 128), generator=g), torch.randint(0, 10000, (8, 128), generator=g)
            orch.driver.train_step("t1", {"tokens": x, "targets": y}, 1)  # optimizer state exists
            spec = orch.driver.network("t1").spec
            started = time.perf_counter()
            blobs = checkpoints.save_to_storage(orch.fleet, spec, 600)
            manifest = orch.checkpoints.write_manifest(spec, yaml.safe_dump(doc), 1, blobs, {})
            write = time.perf_counter() - started
            started = time.perf_counter()
            checkpoints.restore_from_storage(orch.fleet, spec, manifest["vnodes"], 1, 600)
            restore = time.perf_counter() - started
            return {"write_seconds": write, "restore_seconds": restore, "bytes": float(manifest["bytes"]),
                    "vnodes": float(len(manifest["vnodes"])), "parameters": float(spec.num_parameters())}
        finally:
            for p in pnodes:
                p.stop()
            orch.stop()


class Fleet:
    def __init__(self, tmp: Path, heartbeat: float) -> None:
        self.tmp, self.heartbeat = tmp, heartbeat
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.control = orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(self.address))

    def spawn(self, name: str, *args: str) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "dcnr.cli.main", *args], stdout=log,
                                                stderr=subprocess.STDOUT)

    def orchestrator(self) -> None:
        self.spawn("orch", "orchestrator", "--port", str(self.port), "--state-dir", str(self.tmp / "state"),
                   "--heartbeat-interval", str(self.heartbeat))

    def session(self, steps: int) -> str:
        self.orchestrator()
        for i in range(3):
            self.spawn(f"p{i}", "pnode", "--orchestrator", self.address, "--id", f"p{i}", "--threads", "1",
                       "--heartbeat-interval", str(self.heartbeat))
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(self.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=5).pnodes) == 3:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("PNodes did not join")
            time.sleep(0.2)
        c = self.control
        c.CreateVocabulary(orchestrator_pb2.CreateVocabularyRequest(
            name="v", tokenizer_json=train_vocabulary(TEXTS, 300).to_str()), timeout=30)
        c.CreateDataset(iter([orchestrator_pb2.DatasetUpload(name="d", vocabulary="v", validation_fraction=0.1)]
                             + [orchestrator_pb2.DatasetUpload(text=t, end_of_document=True) for t in TEXTS]))
        c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(
            yaml=(ROOT / "examples" / "networks" / "tiny_lm.yml").read_text(), name="lm"), timeout=30)
        s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
            network="lm", dataset="d", steps=steps, batch_size=4, micro_batches=2, seed=0, checkpoint_every=5))
        c.StartTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=30)
        return str(s.id)

    def next_step_after(self, session: str, at_step: int, action: object) -> float:
        """Run `action` when `at_step` is reported; seconds until the next step event after it."""
        acted = 0.0
        while True:
            try:
                for ev in self.control.ListenTrainSession(orchestrator_pb2.SessionRef(id=session), timeout=300):
                    if not acted and ev.step == at_step:
                        action()  # type: ignore[operator]
                        acted = time.perf_counter()
                    elif acted and ev.state in ("running", "completed") and ev.step:
                        return time.perf_counter() - acted
            except grpc.RpcError:
                time.sleep(0.2)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


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
            fleet = Fleet(Path(tmp), args.heartbeat)
            try:
                session = fleet.session(steps=40)
                deaths.append(fleet.next_step_after(session, 12, lambda f=fleet: f.procs["p1"].send_signal(
                    signal.SIGKILL)))

                def restart(f: Fleet = fleet) -> None:
                    f.procs["orch"].send_signal(signal.SIGKILL)
                    f.procs["orch"].wait()
                    f.orchestrator()

                restarts.append(fleet.next_step_after(session, 25, restart))
            finally:
                fleet.close()
    print(f"PNode death -> training resumed (heartbeat {args.heartbeat:g} s, dead after 3 missed, checkpoint every "
          f"5 steps): median {statistics.median(deaths):.2f} s over {len(deaths)} runs "
          f"({', '.join(f'{d:.2f}' for d in deaths)})")
    print(f"orchestrator SIGKILL + restart -> session's next step (includes the new process start-up): median "
          f"{statistics.median(restarts):.2f} s ({', '.join(f'{d:.2f}' for d in restarts)})")


if __name__ == "__main__":
    main()
