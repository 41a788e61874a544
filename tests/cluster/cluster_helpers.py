"""The cluster tests' cluster: `dcnr.cluster.LocalCluster` with the orchestrator and the PNodes in this
process (tests look inside them), talking gRPC on loopback, plus raw stubs for bad-input tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tls_helpers import pnode_identity, to_orchestrator

from dcnr.client import Client
from dcnr.cluster import LocalCluster
from dcnr.data.vocab import train_vocabulary
from dcnr.pnode.agent import PNode
from dcnr.proto.v2 import node_pb2_grpc, orchestrator_pb2_grpc
from dcnr.security.config import ClientConfig
from dcnr.spec.transformer import transformer_lm

TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times." for i in range(200)]


class Cluster(LocalCluster):
    """Started at once: `pnodes` in-process PNodes p0, p1, ... with `budget` bytes each.

    Raw stubs for tests: `control` is the operator's (admin token); `nodes` reaches the peer port as
    `stranger`, a PNode with a certificate of this orchestrator that never joined (id `stranger_id`);
    `p(name)` is the id of PNode `name`."""

    def __init__(self, state_dir: Path, pnodes: int, heartbeat_interval: float = 30.0,
                 step_timeout: float = 60.0, budget: int | None = None, **orchestrator: Any) -> None:
        super().__init__(state_dir, pnodes, heartbeat_interval=heartbeat_interval, step_timeout=step_timeout,
                         in_process=True, memory_budget=budget, orchestrator_options=orchestrator)
        self.start()
        self.ca_pem = self.orch.ca.cert_pem
        self.token = ClientConfig.load(self.admin_config).token
        self.channel = to_orchestrator(self.address, self.ca_pem, token=self.token)
        self.control = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)
        self.stranger_id, self.stranger = pnode_identity(self.orch.ca)
        self.peer_channel = to_orchestrator(f"127.0.0.1:{self.peer_port}", self.ca_pem, self.stranger)
        self.nodes = node_pb2_grpc.NodeManagementServiceStub(self.peer_channel)

    def p(self, name: str) -> str:
        return self.ids[name]

    def add_pnode(self, pnode_id: str) -> PNode:
        """Start one more in-process PNode (it is not in `pnodes`: the caller decides)."""
        pnode: PNode = self.start_pnode(pnode_id)
        self.pnodes.remove(pnode)
        return pnode

    def stop(self) -> None:
        self.channel.close()
        self.peer_channel.close()
        self.close()


def small_lm_yaml(name: str = "small", dropout: float = 0.1, vocab_size: int = 300) -> str:
    doc = transformer_lm(name, blocks=1, heads=2, head_dim=8, dim=16, seq_len=8, vocab_size=vocab_size,
                         dropout=dropout)
    return yaml.safe_dump(doc, sort_keys=False)


def add_data(client: Client, vocab: str = "v", dataset: str = "d") -> None:
    """Store a vocabulary trained on TEXTS and a dataset of TEXTS (10 % held out)."""
    client.upload_vocabulary(vocab, train_vocabulary(TEXTS, 300).to_str())
    client.create_dataset(dataset, vocab, TEXTS, validation_fraction=0.1)
