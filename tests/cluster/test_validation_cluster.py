"""Validation on a real cluster (gRPC, TLS, in-process PNodes): a session under `full` validation trains
bit-identically to the LocalExecutor with every unit verified, across compute classes too, and its checkpoints
are verified and exported by default."""

from __future__ import annotations

import collections
from collections.abc import Callable

import torch
from cluster_helpers import Cluster, add_data, small_lm_yaml
from safetensors.torch import load as load_safetensors

import dcnr
from dcnr.artifact import artifact_metadata

STEPS, BATCH, MICRO, SEED = 6, 4, 2, 3


def test_full_validation_across_compute_classes_keeps_the_result_and_verifies_every_checkpoint(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(3)
    odd = cluster.p("p0")  # says it computes differently: nobody can check its work bit for bit
    rec = cluster.orch.store.get_pnode(odd)
    rec.hardware["compute_class"] = "torch 0.0 / cpu / another ISA / another BLAS"
    cluster.orch.store.put_pnode(rec)
    text = small_lm_yaml(dropout=0.1)
    client = cluster.client
    client.create_network(text)
    add_data(client)
    session = client.create_session("small", "d", STEPS, BATCH, MICRO, SEED, checkpoint_every=2, start=True,
                                    validation="full")
    events = list(client.listen_session(session.id, timeout=300))
    assert events[-1].state == "completed", events[-1]

    log = client.validation_events(session=session.id, limit=10_000)
    assert collections.Counter(e.verdict for e in log) == {"pass": len(log)}
    units_per_step = len(log) // STEPS
    assert units_per_step >= 10 and len(log) == units_per_step * STEPS  # every unit of every step, once
    across = [e for e in log if e.accused == odd]
    assert across and all("another compute class" in e.detail for e in across)
    assert all(e.detail == "" for e in log if e.accused != odd)
    assert not any(e.verifier == e.accused for e in log)

    assert cluster.orch.checkpoints.verified("small") == {0, 2, 4, 6}
    blob = b"".join(client._rpc.export_network("small"))
    assert artifact_metadata(blob)["verified"] == "true" and artifact_metadata(blob)["step"] == str(STEPS)
    params = {k: v for k, v in load_safetensors(blob).items() if not k.startswith("optim/")}
    ex = dcnr.LocalExecutor(dcnr.parse_network(text))
    ds = cluster.orch.data.dataset("d")
    for step in range(STEPS):
        x, y = ds.batch(SEED, step, BATCH, 8)
        ex.train_step({"tokens": x, "targets": y}, micro_batches=MICRO)
    for key, value in ex.parameters().items():
        assert torch.equal(params[key], value), key


def test_steps_trained_without_validation_in_between_raise_no_accusation(
        cluster_factory: Callable[..., Cluster]) -> None:
    """The validator forgets a state that changed without commitments; it never holds it against a PNode."""
    cluster = cluster_factory(2)
    client = cluster.client
    client.create_network(small_lm_yaml(dropout=0.0))
    add_data(client)
    ds = cluster.orch.data.dataset("d")
    for policy in ("full", "off", "full"):
        session = client.create_session("small", "d", 2, BATCH, 1, SEED, start=True, validation=policy)
        assert list(client.listen_session(session.id, timeout=300))[-1].state == "completed"
        x, y = ds.batch(SEED, 0, BATCH, 8)
        client.train_step("small", {"tokens": x, "targets": y})  # TrainNetwork: never committed
    verdicts = collections.Counter(e.verdict for e in client.validation_events(network="small", limit=10_000))
    assert verdicts["pass"] > 0 and set(verdicts) == {"pass"}, verdicts
    assert all(not cluster.orch.standings.get(cluster.p(n)).charges for n in ("p0", "p1"))
