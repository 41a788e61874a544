"""What storage keeps: the newest checkpoints of each session, exported ones, and only the blobs a checkpoint
names — never a blob a checkpoint being written right now will name."""

from __future__ import annotations

import inspect
import logging
import os
import time
from pathlib import Path

import pytest

from dcnr.cli import serve
from dcnr.errors import NotFound
from dcnr.orchestrator.blob_access import BlobAccess
from dcnr.orchestrator.checkpoints import KEEP_CHECKPOINTS, Checkpoints
from dcnr.orchestrator.store import SQLiteStore
from dcnr.spec.loader import parse_network
from dcnr.spec.model import NetworkSpec
from dcnr.storage import BlobStore, FileStore

GRACE = 60.0
SPEC_YAML = ("name: {name}\nnodes:\n  - {{id: a, type: linear, config: {{in_dim: 2, out_dim: 2}}}}\n"
             "inputs: [{{name: x, node_id: a}}]\noutputs: [{{name: y, node_id: a}}]\n")


def spec(name: str) -> NetworkSpec:
    return parse_network(SPEC_YAML.format(name=name))


class Storage:
    """Checkpoints over a directory, with blobs whose age a test sets."""

    def __init__(self, root: Path, keep: int = 2) -> None:
        self.root = root
        self.blobs = BlobStore(FileStore(root))
        self.checkpoints = Checkpoints(self.blobs, keep=keep, grace=GRACE)

    def blob(self, data: bytes, age: float = 2 * GRACE) -> str:
        digest = self.blobs.put_blob(data)
        then = time.time() - age
        os.utime(self.root / "blobs" / digest, (then, then))
        return digest

    def checkpoint(self, network: str, step: int, session: str, **vnodes: str) -> None:
        self.checkpoints.write_manifest(spec(network), "", step, {v: (d, 1) for v, d in vnodes.items()},
                                        {"session": session})

    def steps(self, network: str) -> list[tuple[str, int]]:
        return [(m["session"], m["step"]) for m in self.checkpoints.list(network)]


def test_retention_keeps_the_newest_checkpoints_of_the_session_and_every_exported_one(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    shared = s.blob(b"a VNode that did not change")
    own = {step: s.blob(f"state at {step}".encode()) for step in range(1, 6)}
    s.checkpoint("net", 0, "other", a=s.blob(b"another session's"))
    for step in range(1, 6):
        s.checkpoint("net", step, "s1", a=own[step], b=shared)
    s.checkpoints.mark_kept("net", 2)  # exported
    assert s.checkpoints.retain("net", "s1") == ["net/000000000001.json", "net/000000000003.json"]
    assert s.steps("net") == [("other", 0), ("s1", 2), ("s1", 4), ("s1", 5)]
    assert own[1] not in s.blobs.list_blobs() and own[3] not in s.blobs.list_blobs()
    assert {own[2], own[4], own[5], shared} <= set(s.blobs.list_blobs())
    with pytest.raises(NotFound, match="no checkpoint of network 'net' at step 3"):
        s.checkpoints.mark_kept("net", 3)  # deleted: it cannot be exported any more


def test_keeping_all_deletes_no_checkpoint(tmp_path: Path) -> None:
    s = Storage(tmp_path, keep=0)
    for step in range(4):
        s.checkpoint("net", step, "s1", a=s.blob(f"{step}".encode()))
    assert s.checkpoints.retain("net", "s1") == [] and len(s.steps("net")) == 4
    assert len(s.blobs.list_blobs()) == 4
    with pytest.raises(ValueError, match="checkpoints to keep must be 0"):
        Checkpoints(s.blobs, keep=-1)


def test_only_old_blobs_no_checkpoint_names_and_no_pnode_was_told_to_write_are_collected(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    named = s.blob(b"named by a checkpoint")
    s.checkpoint("net", 1, "s1", a=named)
    old = s.blob(b"left by a checkpoint that failed half-way")
    fresh = s.blob(b"just uploaded, its manifest not written yet", age=1.0)
    reused = s.blob(b"stored long ago, about to be named again")
    s.checkpoints.expect(reused)
    assert s.checkpoints.collect_garbage() == [old]
    assert set(s.blobs.list_blobs()) == {named, fresh, reused}


def test_an_upload_target_protects_a_stored_blob_a_checkpoint_reuses(tmp_path: Path) -> None:
    """The target answers "stored" and nothing is written: without its pin the blob's age would doom it."""
    s = Storage(tmp_path / "storage")
    store = SQLiteStore(tmp_path / "state.sqlite")
    store.set_placements("net", {"a": "p0"})
    access = BlobAccess(s.checkpoints, store)
    reused = s.blob(b"an unchanged VNode")
    assert access.upload_target("p0", "net", "a", reused).stored
    assert s.checkpoints.collect_garbage() == [] and reused in s.blobs.list_blobs()
    s.checkpoints.grace = 0.0  # long after: the checkpoint was written, or never will be
    assert s.checkpoints.collect_garbage() == [reused]


def test_a_manifest_that_cannot_be_read_stops_collection(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It might name any blob: deleting nothing is the safe answer, and the warning says which manifest."""
    s = Storage(tmp_path)
    orphan = s.blob(b"named by nothing readable")
    s.blobs.put_manifest("net/000000000007.json", b"{not json")
    with caplog.at_level(logging.WARNING, logger="dcnr.orchestrator"):
        assert s.checkpoints.collect_garbage() == []
    assert orphan in s.blobs.list_blobs()
    assert "net/000000000007.json" in caplog.text and "no blob is collected" in caplog.text
    s.blobs.delete_manifest("net/000000000007.json")
    assert s.checkpoints.collect_garbage() == [orphan]


def test_deleting_a_network_deletes_its_checkpoints_marks_and_the_blobs_only_they_named(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    shared, mine = s.blob(b"in both networks"), s.blob(b"only in net")
    s.checkpoint("net", 1, "s1", a=mine, b=shared)
    s.checkpoint("net", 2, "s1", a=mine)
    s.checkpoint("net-2", 1, "s2", a=shared)  # a name that starts like it: untouched
    s.checkpoints.mark_kept("net", 1)
    s.checkpoints.mark_loaded("net")
    s.checkpoints.delete_network("net")
    assert s.steps("net") == [] and s.steps("net-2") == [("s2", 1)]
    assert set(s.blobs.list_blobs()) == {shared}
    assert s.blobs.objects.list("kept/") == [] and s.blobs.objects.list("loaded/") == []


def test_the_cli_default_is_the_orchestrators() -> None:
    assert inspect.signature(serve.orchestrator).parameters["keep_checkpoints"].default == KEEP_CHECKPOINTS
