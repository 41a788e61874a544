"""Killing a PNode mid-session changes nothing in the result (SPEC §2, §8): the session restores
its last checkpoint on the live PNodes and replays; the final parameters are bit-identical."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import torch
from cluster_helpers import Cluster, add_data, small_lm_yaml
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

import dcnr
from dcnr.errors import DcnrError
from dcnr.pnode.agent import PNode
from dcnr.proto.v2 import orchestrator_pb2

STEPS, EVERY, BATCH, MICRO, SEED = 30, 5, 4, 2, 5


def crash(p: PNode) -> None:
    """As if the process died: no heartbeats, no server, no unregister."""
    p._stop.set()
    assert p.server is not None
    p.server.stop(None)
    p.runtime.stop()
    p.link.close()


def reference(cluster: Cluster, text: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    ex = dcnr.LocalExecutor(dcnr.parse_network(text))
    ds = cluster.orch.data.dataset("d")
    losses = [ex.train_step(dict(zip(("tokens", "targets"), ds.batch(SEED, step, BATCH, 8), strict=True)),
                            micro_batches=MICRO)["ce_loss"] for step in range(STEPS)]
    return losses, ex.parameters()


def run_with_a_crash(cluster: Cluster, text: str, crash_at: int, victim: int,
                     steps: int = STEPS) -> list[orchestrator_pb2.StepEvent]:
    """Train `text` in a session (checkpoint every EVERY steps), crashing PNode `victim` when step
    `crash_at` is reported; returns every step event."""
    c = cluster.control
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text), timeout=30)
    add_data(cluster.client)
    s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network="small", dataset="d", steps=steps, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
        checkpoint_every=EVERY), timeout=30)
    ref = orchestrator_pb2.SessionRef(id=s.id)
    c.StartTrainSession(ref, timeout=30)
    events, crashed = [], False
    for ev in c.ListenTrainSession(ref, timeout=120):
        events.append(ev)
        if ev.step == crash_at and not crashed:
            crashed = True
            crash(cluster.pnodes.pop(victim))
    assert crashed and events[-1].state == "completed", events[-1].error
    return events


def test_a_pnode_dying_mid_session_changes_nothing(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(3, heartbeat_interval=1.0, step_timeout=30.0)
    c = cluster.control
    text = small_lm_yaml(dropout=0.1)
    events = run_with_a_crash(cluster, text, crash_at=12, victim=1)
    want_losses, want = reference(cluster, text)
    # steps 11-12 ran again after the restore from step 10; every step's loss is the uninterrupted one
    by_step = {e.step: e.loss for e in events if e.state in ("running", "completed")}
    assert [by_step[i + 1] for i in range(STEPS)] == want_losses
    blob = b"".join(ch.data for ch in c.ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name="small"),
                                                      timeout=60))
    got = {k: v for k, v in load_safetensors(blob).items() if not k.startswith("optim/")}
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert cluster.p("p1") not in set(cluster.orch.store.placements("small").values())


def test_checkpoints_are_listed_exported_and_loaded_anywhere(cluster_factory: Callable[..., Cluster],
                                                            tmp_path: Path) -> None:
    """A session's checkpoint exported as one artifact re-creates the network on a cluster and in a
    LocalExecutor, both continuing exactly like the uninterrupted run."""
    cluster = cluster_factory(2)
    c = cluster.control
    text = small_lm_yaml(dropout=0.1)
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text), timeout=30)
    add_data(cluster.client)
    s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network="small", dataset="d", steps=6, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
        checkpoint_every=3), timeout=30)
    c.StartTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=30)
    assert list(c.ListenTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=60))[-1].state == "completed"
    listed = c.ListCheckpoints(orchestrator_pb2.SessionRef(id=s.id), timeout=30).checkpoints
    assert [m.session_step for m in listed] == [0, 3, 6] and all(m.bytes > 0 for m in listed[1:])
    assert listed[0].bytes == 0  # the untrained network's checkpoint: its seed, nothing uploaded
    initial = b"".join(ch.data for ch in c.ExportCheckpoint(orchestrator_pb2.ExportCheckpointRequest(
        session=s.id, session_step=0, has_step=True), timeout=60))
    seeded = {k: v for k, v in load_safetensors(initial).items() if not k.startswith("optim/")}
    fresh = dcnr.LocalExecutor(dcnr.parse_network(text)).parameters()
    assert set(seeded) == set(fresh) and all(torch.equal(seeded[k], v) for k, v in fresh.items())
    blob = b"".join(ch.data for ch in c.ExportCheckpoint(orchestrator_pb2.ExportCheckpointRequest(
        session=s.id, session_step=3, has_step=True), timeout=60))
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    meta = safe_open(str(path), framework="pt").metadata()
    assert meta["training.dataset_sha256"] == cluster.orch.data.get_dataset("d")["sha256"]
    assert meta["yaml"] == text and meta["step"] == "3" and meta["training.session_step"] == "3"

    ex = dcnr.LocalExecutor.from_artifact(path)  # the state after 3 steps, optimizer moments included
    want = dcnr.LocalExecutor(dcnr.parse_network(text))
    ds = cluster.orch.data.dataset("d")
    batches = [dict(zip(("tokens", "targets"), ds.batch(SEED, step, BATCH, 8), strict=True)) for step in range(6)]
    for batch in batches[:3]:
        want.train_step(batch, micro_batches=MICRO)
    assert ex.step == 3 and all(torch.equal(ex.parameters()[k], v) for k, v in want.parameters().items())
    for batch in batches[3:]:
        assert ex.train_step(batch, micro_batches=MICRO) == want.train_step(batch, micro_batches=MICRO)
    chunks = [orchestrator_pb2.BlobChunk(data=blob, name="from-ckpt")]
    assert c.ImportNetwork(iter(chunks), timeout=60).step == 3
    with pytest.raises(grpc.RpcError) as info:
        list(c.ExportCheckpoint(orchestrator_pb2.ExportCheckpointRequest(session=s.id, session_step=4,
                                                                         has_step=True), timeout=30))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_failover_with_checkpoints_in_an_s3_compatible_store(cluster_factory: Callable[..., Cluster],
                                                             s3_endpoint: str) -> None:
    """The same guarantee with s3:// storage: PNodes move blobs through pre-signed URLs only."""
    import boto3

    bucket = f"ckpt-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    cluster = cluster_factory(3, heartbeat_interval=1.0, step_timeout=30.0, storage=f"s3://{bucket}/runs",
                              s3_endpoint_url=s3_endpoint)
    c = cluster.control
    text = small_lm_yaml(dropout=0.1)
    run_with_a_crash(cluster, text, crash_at=8, victim=0)
    _, want = reference(cluster, text)
    blob = b"".join(ch.data for ch in c.ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name="small"),
                                                      timeout=60))
    got = {k: v for k, v in load_safetensors(blob).items() if not k.startswith("optim/")}
    assert all(torch.equal(got[k], want[k]) for k in want)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=bucket, Prefix="runs/manifests/small/")["Contents"]]
    assert keys == [f"runs/manifests/small/{step:012d}.json" for step in range(10, STEPS + 1, EVERY)]  # newest 5


def declare_dead(cluster: Cluster, name: str) -> None:
    """What the orchestrator concludes of a PNode frozen past the death timeout: it is marked dead and
    its VNodes are released, while the process itself still runs (and still holds their state)."""
    fleet = cluster.orch.fleet
    rec = fleet.store.get_pnode(cluster.p(name))
    rec.last_seen = 0.0
    fleet.store.put_pnode(rec)
    assert fleet.sweep() == [cluster.p(name)]


def test_a_pnode_declared_dead_between_steps_never_leaves_rebuilt_parameters_behind(
        cluster_factory: Callable[..., Cluster]) -> None:
    """A step may complete although one of its PNodes was declared dead meanwhile (it woke in time);
    the VNodes placed anew afterwards hold no state, so the session restores its checkpoint instead
    of training on parameters built again from the seed."""
    cluster = cluster_factory(3)
    text = small_lm_yaml(dropout=0.1)
    c = cluster.client
    c.create_network(text)
    add_data(c)
    steps = 12
    session = c.create_session("small", "d", steps, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
                               checkpoint_every=EVERY, start=True).id
    declared, losses = False, {}
    for ev in c.listen_session(session, timeout=120):
        assert ev.state != "failed", ev.error
        if ev.state in ("running", "completed"):
            losses[ev.step] = ev.loss
        if ev.step == 7 and not declared:
            declared = True
            declare_dead(cluster, "p1")
    assert declared and losses.get(steps) is not None
    ex = dcnr.LocalExecutor(dcnr.parse_network(text))
    ds = cluster.orch.data.dataset("d")
    want = [ex.train_step(dict(zip(("tokens", "targets"), ds.batch(SEED, step, BATCH, 8), strict=True)),
                          micro_batches=MICRO)["ce_loss"] for step in range(steps)]
    assert [losses[i + 1] for i in range(steps)] == want
    c.export_network("small", cluster.state_dir / "final.safetensors")
    params = {k: v for k, v in load_file(cluster.state_dir / "final.safetensors").items()
              if not k.startswith("optim/")}
    assert all(torch.equal(params[k], v) for k, v in ex.parameters().items())


def test_training_outside_a_session_refuses_to_go_on_after_losing_state(
        cluster_factory: Callable[..., Cluster]) -> None:
    """Without a session there is no checkpoint to go back to: the next step is refused with a clear
    error naming the lost VNodes, and nothing is trained on rebuilt parameters."""
    cluster = cluster_factory(2)
    text = small_lm_yaml(dropout=0.0)
    c = cluster.client
    c.create_network(text)
    add_data(c)
    x, y = cluster.orch.data.dataset("d").batch(SEED, 0, BATCH, 8)
    c.train_step("small", {"tokens": x, "targets": y})
    declare_dead(cluster, "p1")
    with pytest.raises(DcnrError, match="lost the state of VNode"):
        c.train_step("small", {"tokens": x, "targets": y})
    with pytest.raises(DcnrError, match="lost the state of VNode"):
        c.forward("small", {"tokens": x})


def test_an_untrained_network_rebuilds_lost_vnodes_from_its_seed(cluster_factory: Callable[..., Cluster]) -> None:
    """Initial parameters are a pure function of the seed: losing them costs nothing."""
    cluster = cluster_factory(2)
    text = small_lm_yaml(dropout=0.0)
    c = cluster.client
    c.create_network(text)
    add_data(c)
    x, _ = cluster.orch.data.dataset("d").batch(SEED, 0, BATCH, 8)
    before = c.forward("small", {"tokens": x})
    declare_dead(cluster, "p1")
    after = c.forward("small", {"tokens": x})
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
