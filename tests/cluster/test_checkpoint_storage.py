"""Checkpoint storage in a running cluster: what retention keeps, what deleting a network removes, and a
session that fails with the storage's reason — at once, not after looping through restores — when
storage fails under it."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from cluster_helpers import Cluster, add_data, small_lm_yaml

import dcnr.storage.objects
from dcnr.proto.v2 import orchestrator_pb2

BATCH, MICRO, SEED = 4, 2, 5


def start_session(cluster: Cluster, steps: int, every: int) -> orchestrator_pb2.SessionRef:
    c = cluster.control
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=30)
    add_data(cluster.client)
    s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network="small", dataset="d", steps=steps, batch_size=BATCH, micro_batches=MICRO, seed=SEED,
        checkpoint_every=every), timeout=30)
    ref = orchestrator_pb2.SessionRef(id=s.id)
    c.StartTrainSession(ref, timeout=30)
    return ref


def last_event(cluster: Cluster, ref: orchestrator_pb2.SessionRef) -> orchestrator_pb2.StepEvent:
    """The session's final event; the 60 s deadline is far below the recovery timeout (600 s), so a session
    that retried a storage failure instead of failing would not end in time."""
    return list(cluster.control.ListenTrainSession(ref, timeout=60))[-1]


def stored(root: Path, kind: str) -> set[str]:
    return {str(p.relative_to(root / kind)) for p in (root / kind).rglob("*") if p.is_file()} \
        if (root / kind).is_dir() else set()


def test_retention_keeps_the_newest_and_exported_checkpoints_and_deleting_the_network_removes_them(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(2, keep_checkpoints=2)
    cluster.orch.checkpoints.grace = 0.0  # one session, nothing else writing: collect at once
    root = cluster.state_dir / "state" / "storage"
    c = cluster.control
    ref = start_session(cluster, steps=8, every=1)
    for ev in c.ListenTrainSession(ref, timeout=60):
        if ev.step == 2:
            break
    exported_at = c.SuspendTrainSession(ref, timeout=60).step
    assert 2 <= exported_at < 7
    blob = b"".join(ch.data for ch in c.ExportCheckpoint(orchestrator_pb2.ExportCheckpointRequest(
        session=ref.id), timeout=60))
    assert blob and stored(root, "kept") == {f"small/{exported_at:012d}.json"}
    c.StartTrainSession(ref, timeout=30)
    assert last_event(cluster, ref).state == "completed"

    listed = c.ListCheckpoints(ref, timeout=30).checkpoints
    assert [m.session_step for m in listed] == [exported_at, 7, 8]  # the exported one, and the newest two
    named = {d for m in cluster.orch.checkpoints.list("small") for d in m["vnodes"].values()}
    assert stored(root, "blobs") == named  # every older blob collected, none that is named

    c.DeleteNetwork(orchestrator_pb2.NetworkRef(name="small"), timeout=30)
    assert stored(root, "manifests") == stored(root, "kept") == stored(root, "blobs") == set()
    assert not c.ListCheckpoints(ref, timeout=30).checkpoints


def test_a_full_disk_fails_the_session_naming_it(cluster_factory: Callable[..., Cluster],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator's disk fills up under the blobs PNodes stream to it: the error travels orchestrator ->
    PNode -> orchestrator as a storage failure, and the session fails with it instead of restoring and
    training the same steps again."""
    cluster = cluster_factory(2)
    write = dcnr.storage.objects.write_atomic

    def full_for_blobs(path: str | Path, data: bytes | Iterable[bytes]) -> int:
        if Path(path).parent.name == "blobs":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, data)

    monkeypatch.setattr(dcnr.storage.objects, "write_atomic", full_for_blobs)
    ref = start_session(cluster, steps=6, every=2)  # its first checkpoint (the seed's) needs no blob
    ev = last_event(cluster, ref)
    assert ev.state == "failed" and ev.step == 1
    assert ev.error.startswith("could not write the checkpoint at step 2: ")
    assert "could not write blobs/" in ev.error and ev.error.endswith("No space left on device (ENOSPC)")
    assert [m.session_step for m in cluster.control.ListCheckpoints(ref, timeout=30).checkpoints] == [0]


def test_a_blob_lost_from_storage_fails_the_restore_naming_it(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(2)
    root = cluster.state_dir / "state" / "storage"
    c = cluster.control
    ref = start_session(cluster, steps=20, every=1)
    for ev in c.ListenTrainSession(ref, timeout=60):
        if ev.step == 2:
            break
    at = c.SuspendTrainSession(ref, timeout=60).step
    latest = json.loads((root / "manifests" / "small" / f"{at:012d}.json").read_bytes())
    lost = sorted(latest["vnodes"].values())[0]
    (root / "blobs" / lost).unlink()
    c.StartTrainSession(ref, timeout=30)  # resuming restores the checkpoint: its blob is gone
    ev = last_event(cluster, ref)
    assert ev.state == "failed"
    assert ev.error.startswith(f"could not restore the checkpoint at step {at}: ")
    assert f"blob {lost[:12]}…" in ev.error and "is missing from storage file://" in ev.error
