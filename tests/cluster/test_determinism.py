"""Same answer everywhere (SPEC §2): the LocalExecutor, 1 PNode and 3 PNodes train bit-identically."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from cluster_helpers import Cluster, add_data, small_lm_yaml
from safetensors.torch import load as load_safetensors

import dcnr
from dcnr.proto.v2 import orchestrator_pb2

STEPS, BATCH, MICRO, SEED = 10, 4, 2, 11


def train_on_cluster(cluster: Cluster, text: str) -> tuple[list[float], dict[str, torch.Tensor], dict[str, str]]:
    c = cluster.control
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text), timeout=30)
    add_data(cluster.client)
    s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network="small", dataset="d", steps=STEPS, batch_size=BATCH, micro_batches=MICRO, seed=SEED), timeout=30)
    c.StartTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=30)
    events = list(c.ListenTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=120))
    assert [e.state for e in events][-1] == "completed", events[-1]
    blob = b"".join(ch.data for ch in c.ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name="small"),
                                                      timeout=60))
    params = {k: v for k, v in load_safetensors(blob).items() if not k.startswith("optim/")}
    return [e.loss for e in events], params, cluster.orch.store.placements("small")


@pytest.mark.parametrize("pnodes", [1, 3])
def test_cluster_training_is_bit_identical_to_the_local_executor(
        cluster_factory: Callable[..., Cluster], pnodes: int) -> None:
    """10 steps with dropout and 2 micro-batches: identical losses and final parameters, however VNodes are spread."""
    text = small_lm_yaml(dropout=0.1)
    cluster = cluster_factory(pnodes)
    losses, params, placement = train_on_cluster(cluster, text)
    assert len(set(placement.values())) == pnodes, "every PNode should host part of the network"
    stats = [p.runtime.stats for p in cluster.pnodes]
    # colocated VNodes pass tensors in-process (with 3 PNodes, the one holding the embedder and the fused LM
    # head has no two neighbours together)
    assert sum(s["local_hops"] > 0 for s in stats) >= min(pnodes, 2)
    if pnodes == 1:
        assert stats[0]["hops_sent"] == 0 and cluster.pnodes[0].hops.bytes_sent == 0  # nothing serialized
    else:
        assert all(s["hops_sent"] > 0 for s in stats)

    ex = dcnr.LocalExecutor(dcnr.parse_network(text))
    ds = cluster.orch.data.dataset("d")
    want = []
    for step in range(STEPS):
        x, y = ds.batch(SEED, step, BATCH, 8)
        want.append(ex.train_step({"tokens": x, "targets": y}, micro_batches=MICRO)["ce_loss"])
    assert losses == want
    ref = ex.parameters()
    assert set(params) == set(ref)
    for key, value in ref.items():
        assert torch.equal(params[key], value), key
    initial = dcnr.LocalExecutor(dcnr.parse_network(text)).parameters()
    assert all(not torch.equal(initial[k], ref[k]) for k in ref if k.endswith("weight")), "training changed nothing"
