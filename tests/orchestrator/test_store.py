"""The SQLite state store: records survive a reopen, errors are typed, writes are atomic."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from dcnr.orchestrator.store import (
    AlreadyExists,
    NetworkRecord,
    NotFound,
    PNodeRecord,
    SessionRecord,
    SQLiteStore,
)


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state" / "dcnr.sqlite"
    s = SQLiteStore(db)
    s.put_pnode(PNodeRecord("p1", "127.0.0.1:5000", {"cpu_cores": 2}))
    s.create_network(NetworkRecord("net", "nodes: []"))
    s.set_placement("net", "fc1", "p1")
    s.set_placement("net", "fc2", "p1")
    s.put_session(SessionRecord("s1", "net", "d", steps=10, batch_size=4, micro_batches=2, seed=3))
    s.close()
    s = SQLiteStore(db)
    assert s.get_pnode("p1").hardware == {"cpu_cores": 2}
    assert s.get_network("net").yaml == "nodes: []"
    assert s.placements("net") == {"fc1": "p1", "fc2": "p1"}
    assert s.get_session("s1").micro_batches == 2
    assert s.clear_placements("p1") == [("net", "fc1"), ("net", "fc2")] and s.placements("net") == {}


def test_vnodes_lost_with_their_pnode_stay_lost_across_a_reopen_until_restored(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    s = SQLiteStore(db)
    s.create_network(NetworkRecord("net", "a"))
    s.set_placements("net", {"fc1": "p1", "fc2": "p2", "fc3": "p2"})
    s.clear_placements("p2")
    s.close()
    s = SQLiteStore(db)
    first = s.lost("net")
    assert set(first) == {"fc2", "fc3"} and len(set(first.values())) == 1
    s.set_placements("net", {"fc1": "p1", "fc2": "p1", "fc3": "p1"})
    s.clear_placements("p1")  # a later loss, numbered after the first
    later = s.lost("net")
    assert set(later) == {"fc1", "fc2", "fc3"} and min(later.values()) > max(first.values())
    s.clear_lost("net", upto=max(first.values()))  # a restore that began before the later loss
    assert s.lost("net") == later
    s.clear_lost("net", upto=max(later.values()))
    assert s.lost("net") == {}
    s.set_placements("net", {"fc1": "p3"})
    s.clear_placements("p3")
    assert s.delete_network("net") and s.lost("net") == {}


def test_typed_errors(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")
    s.create_network(NetworkRecord("net", "a"))
    with pytest.raises(AlreadyExists, match="'net' already exists"):
        s.create_network(NetworkRecord("net", "b"))
    for call, message in ((lambda: s.get_network("x"), "unknown network 'x'"),
                          (lambda: s.get_pnode("x"), "unknown PNode 'x'"),
                          (lambda: s.get_session("x"), "unknown session 'x'"),
                          (lambda: s.update_network("x", "y"), "unknown network 'x'")):
        with pytest.raises(NotFound) as info:
            call()
        assert str(info.value) == message
    assert s.delete_network("net") and not s.delete_network("net")


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError), s._tx() as db:
        db.execute("INSERT INTO networks VALUES ('half', 'x', 0, 0)")
        raise RuntimeError("crash mid-write")
    with pytest.raises(NotFound):
        s.get_network("half")


def test_concurrent_writers(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")

    def work(i: int) -> None:
        for j in range(50):
            s.set_placement("net", f"v{i}_{j}", f"p{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(s.placements("net")) == 200


def test_a_state_file_of_schema_1_is_migrated_and_keeps_its_pnodes(tmp_path: Path) -> None:
    """An orchestrator upgraded in place opens the state file its predecessor wrote: PNodes gain the paused flag
    and compute time (zero), nothing else changes."""
    db = tmp_path / "state.sqlite"
    old = sqlite3.connect(db)
    old.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE pnodes (id TEXT PRIMARY KEY, address TEXT NOT NULL, hardware TEXT NOT NULL,
            state TEXT NOT NULL, last_seen REAL NOT NULL, load REAL NOT NULL);
        INSERT INTO pnodes VALUES ('p1', 'h:1', '{"cpu_cores": 2}', 'alive', 12.5, 0.25);
    """)
    old.close()
    s = SQLiteStore(db)
    assert s.get_pnode("p1") == PNodeRecord("p1", "h:1", {"cpu_cores": 2}, "alive", 12.5, 0.25, False, 0.0, 0.0)
    s.put_pnode(PNodeRecord("p1", "h:1", {}, paused=True, compute_seconds=7.5, compute_reported=2.5))
    s.close()
    again = SQLiteStore(db)  # migrated once: opened again as it is
    assert (again.get_pnode("p1").paused, again.get_pnode("p1").compute_seconds) == (True, 7.5)
    assert [p.compute_reported for p in again.list_pnodes()] == [2.5]
