"""An embedded cluster on loopback for tests: an orchestrator and PNodes in this process, talking gRPC.

(Clusters of separate processes are `dcnr.cluster.LocalCluster`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import yaml

from dcnr.client import Client
from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.app import Orchestrator
from dcnr.pnode.agent import PNode
from dcnr.proto.v2 import node_pb2_grpc, orchestrator_pb2_grpc
from dcnr.spec.transformer import transformer_lm

TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times." for i in range(200)]


class Cluster:
    def __init__(self, state_dir: Path, pnodes: int, heartbeat_interval: float = 30.0,
                 step_timeout: float = 60.0, budget: int | None = None, **orchestrator: Any) -> None:
        self.orch = Orchestrator(state_dir, heartbeat_interval=heartbeat_interval, step_timeout=step_timeout,
                                 **orchestrator)
        self.port = self.orch.start("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.pnodes = [self.add_pnode(f"p{i}", budget) for i in range(pnodes)]
        self.channel = grpc.insecure_channel(self.address)
        self.control = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)
        self.nodes = node_pb2_grpc.NodeManagementServiceStub(self.channel)
        self.client = Client(self.address)

    def add_pnode(self, pnode_id: str, budget: int | None = None) -> PNode:
        p = PNode(self.address, pnode_id=pnode_id, memory_budget=budget, set_torch_threads=False,
                  heartbeat_interval=self.orch.fleet.heartbeat_interval)
        p.start()
        return p

    def stop(self) -> None:
        self.client.close()
        self.channel.close()
        for p in self.pnodes:
            p.stop()
        self.orch.stop(grace=0.5)


def small_lm_yaml(name: str = "small", dropout: float = 0.1, vocab_size: int = 300) -> str:
    doc = transformer_lm(name, blocks=1, heads=2, head_dim=8, dim=16, seq_len=8, vocab_size=vocab_size,
                         dropout=dropout)
    return yaml.safe_dump(doc, sort_keys=False)


def add_data(client: Client, vocab: str = "v", dataset: str = "d") -> None:
    """Store a vocabulary trained on TEXTS and a dataset of TEXTS (10 % held out)."""
    client.upload_vocabulary(vocab, train_vocabulary(TEXTS, 300).to_str())
    client.create_dataset(dataset, vocab, TEXTS, validation_fraction=0.1)
