"""Durable orchestrator state behind one interface, kept in SQLite.

What the orchestrator must remember across restarts about its fleet and its work —
PNodes, networks, placements (and VNodes whose state was lost with their PNode), sessions
and their step events, tokens, the standing of PNode identities, the validation log and the
fleet's history — goes through `StateStore`. `SQLiteStore`, the only implementation, keeps
one file under the state dir, in WAL mode, with every write in a transaction; it belongs to
one orchestrator process (several orchestrators sharing one backend is not built). Tables
added since a file was written are created when it is opened. Vocabularies and datasets are
not here: they live in the object store, beside checkpoints (`dcnr.orchestrator.datastore`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dcnr.errors import AlreadyExists, Conflict, NotFound
from dcnr.security.tokens import TokenRecord

__all__ = ["AlreadyExists", "NotFound"]  # the store raises them; callers import them from here too

SCHEMA_VERSION = 2
# what brings a state file of version N to N + 1 (run in one transaction when it is opened)
_MIGRATIONS: dict[int, tuple[tuple[str, str, str], ...]] = {  # from version: columns added (table, column, type)
    1: (("pnodes", "paused", "INTEGER NOT NULL DEFAULT 0"),
        ("pnodes", "compute_seconds", "REAL NOT NULL DEFAULT 0"),
        ("pnodes", "compute_reported", "REAL NOT NULL DEFAULT 0")),
}


@dataclass
class PNodeRecord:
    id: str
    address: str
    hardware: dict[str, Any]
    state: str = "alive"  # alive | dead
    last_seen: float = field(default_factory=time.time)
    load: float = 0.0
    paused: bool = False  # its volunteer paused it: it stays registered but gets no work
    compute_seconds: float = 0.0  # compute time it contributed, credited from its heartbeats
    compute_reported: float = 0.0  # the running total its current process last reported (and was credited)


@dataclass
class NetworkRecord:
    name: str
    yaml: str
    created_at: float = field(default_factory=time.time)
    step: int = 0  # training steps applied to its parameters


@dataclass
class SessionRecord:
    id: str
    network: str
    dataset: str
    steps: int
    batch_size: int
    micro_batches: int
    seed: int
    checkpoint_every: int = 0
    state: str = "created"  # created | running | suspended | completed | failed
    step: int = 0
    error: str = ""
    created_at: float = field(default_factory=time.time)
    validation: str = ""  # the policy (`dcnr.validation.policy`): off | sample:P | full; "": the network's default


@dataclass
class Standing:
    """What the orchestrator holds for or against one PNode identity. Ids derive from the PNode's key, so a
    standing follows the identity across restarts; it is kept when the PNode unregisters or dies."""

    pnode: str
    trusted: bool = False  # an operator vouched for it: its work is sampled less (`Policy.rate_for`)
    charges: int = 0  # validations it failed since it was last released
    quarantined_until: float = 0.0  # unix time until which it gets no work; 0: not quarantined
    reason: str = ""  # why it was last charged

    def quarantined(self, now: float | None = None) -> bool:
        """Whether it is in quarantine at `now` (default: the current time)."""
        return self.quarantined_until > (time.time() if now is None else now)


@dataclass
class ValidationEvent:
    """One entry of the validation log, written by the validator (and by operators' trust and release).

    `verdict` is one of:
    - "pass": the verifier's re-execution matched the accused's commitment;
    - "fail": it did not and the referee sided with the verifier, or the accused's evidence or checkpoint blob
      is not what it committed to: the accused is charged;
    - "false-accusation": the referee sided with the accused: the verifier (named as accused) is charged;
    - "unresolved": no referee could settle a mismatch (nobody is charged; the step is rolled back);
    - "fault": commitments disagree about a hop, an input or a cost, pinned on whoever cannot back its word
      with a signature: it is charged;
    - "unverified": the accused's evidence or a verifier's answer could not be had (no judgement);
    - "unverifiable": no other PNode could verify the accused (a fleet of one);
    - "released": an operator lifted the accused's quarantine and charges;
    - "trusted" / "untrusted": an operator marked or unmarked the accused as trusted.
    Fields that do not apply are empty (or 0).
    """

    network: str
    session: str
    step: int  # the network's step the unit belongs to
    unit: str  # the work unit checked (e.g. a VNode and micro-batch)
    accused: str  # PNode whose work was checked (or whose standing an operator changed)
    verifier: str  # PNode that re-executed it
    referee: str  # PNode that settled a mismatch
    verdict: str
    detail: str  # a line for people: what differed, or who acted
    at: float = field(default_factory=time.time)
    seq: int = 0  # its place in the log (set by the store; increasing)


@dataclass
class FleetEvent:
    """One entry of the fleet's history (`dcnr.orchestrator.history.FLEET_KINDS` lists the kinds): a PNode
    joined, died, left, was quarantined, released, paused or resumed; a relay joined or died."""

    kind: str
    pnode: str  # the PNode (or relay) it concerns
    detail: str = ""  # a line for people: an address, a reason, who acted
    at: float = field(default_factory=time.time)
    seq: int = 0  # its place in the history (set by the store; increasing)


class StateStore(Protocol):
    """What the orchestrator needs from durable storage."""

    def put_pnode(self, rec: PNodeRecord) -> None: ...
    def get_pnode(self, pnode_id: str) -> PNodeRecord: ...
    def list_pnodes(self) -> list[PNodeRecord]: ...
    def delete_pnode(self, pnode_id: str) -> bool: ...
    def create_network(self, rec: NetworkRecord) -> None: ...
    def update_network(self, name: str, yaml: str) -> None: ...
    def get_network(self, name: str) -> NetworkRecord: ...
    def list_networks(self) -> list[NetworkRecord]: ...
    def delete_network(self, name: str) -> bool: ...
    def set_network_step(self, name: str, step: int) -> None: ...
    def set_placement(self, network: str, vnode: str, pnode: str) -> None: ...
    def set_placements(self, network: str, placement: dict[str, str]) -> None: ...
    def placements(self, network: str) -> dict[str, str]: ...
    def clear_placements(self, pnode: str) -> list[tuple[str, str]]: ...
    def lost(self, network: str) -> dict[str, int]: ...
    def clear_lost(self, network: str, upto: int | None = None) -> None: ...
    def put_session(self, rec: SessionRecord) -> None: ...
    def get_session(self, session_id: str) -> SessionRecord: ...
    def list_sessions(self) -> list[SessionRecord]: ...
    def delete_session(self, session_id: str) -> bool: ...
    def put_step_event(self, session: str, step: int, event: dict[str, Any]) -> None: ...
    def step_events(self, session: str, from_step: int = 0, limit: int = 0) -> list[dict[str, Any]]: ...
    def last_step_event(self, session: str) -> dict[str, Any] | None: ...
    def truncate_step_events(self, session: str, after_step: int) -> None: ...
    def add_fleet_event(self, event: FleetEvent) -> int: ...
    def list_fleet_events(self, after: int = 0, limit: int = 1000) -> list[FleetEvent]: ...
    def count_validation_verdicts(self) -> dict[str, int]: ...
    def put_token(self, rec: TokenRecord) -> None: ...
    def token_by_key(self, key: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def delete_token(self, name: str) -> bool: ...
    def get_standing(self, pnode: str) -> Standing: ...
    def put_standing(self, rec: Standing) -> None: ...
    def list_standings(self) -> list[Standing]: ...
    def add_validation_event(self, event: ValidationEvent) -> int: ...
    def list_validation_events(self, session: str = "", network: str = "", limit: int = 1000) -> list[ValidationEvent]:
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pnodes (id TEXT PRIMARY KEY, address TEXT NOT NULL, hardware TEXT NOT NULL,
    state TEXT NOT NULL, last_seen REAL NOT NULL, load REAL NOT NULL, paused INTEGER NOT NULL DEFAULT 0,
    compute_seconds REAL NOT NULL DEFAULT 0, compute_reported REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS networks (name TEXT PRIMARY KEY, yaml TEXT NOT NULL, created_at REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS placements (network TEXT NOT NULL, vnode TEXT NOT NULL, pnode TEXT NOT NULL,
    PRIMARY KEY (network, vnode));
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lost (network TEXT NOT NULL, vnode TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (network, vnode));
CREATE TABLE IF NOT EXISTS standings (pnode TEXT PRIMARY KEY, trusted INTEGER NOT NULL, charges INTEGER NOT NULL,
    quarantined_until REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS validation_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    network TEXT NOT NULL, session TEXT NOT NULL, step INTEGER NOT NULL, unit TEXT NOT NULL, accused TEXT NOT NULL,
    verifier TEXT NOT NULL, referee TEXT NOT NULL, verdict TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS validation_events_session ON validation_events (session, seq);
CREATE INDEX IF NOT EXISTS validation_events_network ON validation_events (network, seq);
CREATE TABLE IF NOT EXISTS step_events (session TEXT NOT NULL, step INTEGER NOT NULL, at REAL NOT NULL,
    event TEXT NOT NULL, PRIMARY KEY (session, step));
CREATE TABLE IF NOT EXISTS fleet_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    pnode TEXT NOT NULL, detail TEXT NOT NULL);
"""
FLEET_EVENTS_KEPT = 100_000  # the newest entries of the fleet's history kept (older ones are deleted)


class SQLiteStore:
    """`StateStore` in one SQLite file (WAL mode; safe across threads of one process)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) < SCHEMA_VERSION:
            self._migrate(int(row[0]))
        elif int(row[0]) != SCHEMA_VERSION:
            raise Conflict(f"{self.path}: state schema version {row[0]}, this orchestrator needs {SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        """Bring a state file written by an older orchestrator up to `SCHEMA_VERSION`, in one transaction."""
        with self._tx() as db:
            for v in range(version, SCHEMA_VERSION):
                for table, column, kind in _MIGRATIONS[v]:
                    if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")  # (a table made new has it)
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...], what: str) -> tuple[Any, ...]:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        if row is None:
            raise NotFound(what)
        return tuple(row)

    # -- pnodes --------------------------------------------------------------------
    def put_pnode(self, rec: PNodeRecord) -> None:
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO pnodes ({_PNODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (rec.id, rec.address, json.dumps(rec.hardware), rec.state, rec.last_seen, rec.load,
                        int(rec.paused), rec.compute_seconds, rec.compute_reported))

    def get_pnode(self, pnode_id: str) -> PNodeRecord:
        row = self._one(f"SELECT {_PNODE_COLUMNS} FROM pnodes WHERE id=?", (pnode_id,), f"unknown PNode {pnode_id!r}")
        return _pnode(row)

    def list_pnodes(self) -> list[PNodeRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_PNODE_COLUMNS} FROM pnodes ORDER BY id").fetchall()
        return [_pnode(r) for r in rows]

    def delete_pnode(self, pnode_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM pnodes WHERE id=?", (pnode_id,)).rowcount > 0

    # -- networks --------------------------------------------------------------------
    def create_network(self, rec: NetworkRecord) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM networks WHERE name=?", (rec.name,)).fetchone():
                raise AlreadyExists(f"network {rec.name!r} already exists")
            db.execute("INSERT INTO networks VALUES (?, ?, ?, ?)", (rec.name, rec.yaml, rec.created_at, rec.step))

    def update_network(self, name: str, yaml: str) -> None:
        with self._tx() as db:
            if db.execute("UPDATE networks SET yaml=? WHERE name=?", (yaml, name)).rowcount == 0:
                raise NotFound(f"unknown network {name!r}")

    def set_network_step(self, name: str, step: int) -> None:
        with self._tx() as db:
            if db.execute("UPDATE networks SET step=? WHERE name=?", (step, name)).rowcount == 0:
                raise NotFound(f"unknown network {name!r}")

    def get_network(self, name: str) -> NetworkRecord:
        row = self._one("SELECT * FROM networks WHERE name=?", (name,), f"unknown network {name!r}")
        return NetworkRecord(*row)

    def list_networks(self) -> list[NetworkRecord]:
        with self._lock:
            return [NetworkRecord(*r) for r in self._db.execute("SELECT * FROM networks ORDER BY name")]

    def delete_network(self, name: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM placements WHERE network=?", (name,))
            db.execute("DELETE FROM lost WHERE network=?", (name,))
            return db.execute("DELETE FROM networks WHERE name=?", (name,)).rowcount > 0

    # -- placements ----------------------------------------------------------------------
    def set_placement(self, network: str, vnode: str, pnode: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO placements VALUES (?, ?, ?)", (network, vnode, pnode))

    def set_placements(self, network: str, placement: dict[str, str]) -> None:
        """Replace a network's whole placement in one transaction."""
        with self._tx() as db:
            db.execute("DELETE FROM placements WHERE network=?", (network,))
            db.executemany("INSERT INTO placements VALUES (?, ?, ?)",
                           [(network, v, p) for v, p in sorted(placement.items())])

    def placements(self, network: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT vnode, pnode FROM placements WHERE network=? ORDER BY vnode",
                                    (network,)).fetchall()
        return dict(rows)

    def clear_placements(self, pnode: str) -> list[tuple[str, str]]:
        """Forget every placement on a PNode, recording its VNodes as lost (their state went with it);
        returns the (network, vnode) pairs it hosted."""
        with self._tx() as db:
            rows = db.execute("SELECT network, vnode FROM placements WHERE pnode=? ORDER BY network, vnode",
                              (pnode,)).fetchall()
            db.execute("DELETE FROM placements WHERE pnode=?", (pnode,))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM lost").fetchone()[0]
            db.executemany("INSERT OR REPLACE INTO lost VALUES (?, ?, ?)", [(r[0], r[1], seq) for r in rows])
        return [(r[0], r[1]) for r in rows]

    def lost(self, network: str) -> dict[str, int]:
        """VNodes of a network whose PNode was lost since its state was last restored: vnode -> loss number
        (increasing)."""
        with self._lock:
            rows = self._db.execute("SELECT vnode, seq FROM lost WHERE network=? ORDER BY vnode", (network,)).fetchall()
        return dict(rows)

    def clear_lost(self, network: str, upto: int | None = None) -> None:
        """The network's state was restored: forget its losses numbered `upto` or lower (all with None)."""
        with self._tx() as db:
            if upto is None:
                db.execute("DELETE FROM lost WHERE network=?", (network,))
            else:
                db.execute("DELETE FROM lost WHERE network=? AND seq<=?", (network, upto))

    # -- sessions ----------------------------------------------------------------------------
    def put_session(self, rec: SessionRecord) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?)", (rec.id, json.dumps(asdict(rec))))

    def get_session(self, session_id: str) -> SessionRecord:
        row = self._one("SELECT record FROM sessions WHERE id=?", (session_id,), f"unknown session {session_id!r}")
        return SessionRecord(**json.loads(row[0]))

    def list_sessions(self) -> list[SessionRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM sessions").fetchall()
        return sorted((SessionRecord(**json.loads(r[0])) for r in rows), key=lambda s: (s.created_at, s.id))

    def delete_session(self, session_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM step_events WHERE session=?", (session_id,))
            return db.execute("DELETE FROM sessions WHERE id=?", (session_id,)).rowcount > 0

    # -- step events of sessions (one per step: a step trained again replaces its entry) ---------------------
    def put_step_event(self, session: str, step: int, event: dict[str, Any]) -> None:
        """Record what session `session` reported for its step `step` (a JSON object with an "at" time)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO step_events VALUES (?, ?, ?, ?)",
                       (session, step, float(event.get("at", time.time())), json.dumps(event)))

    def step_events(self, session: str, from_step: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        """The session's step events from step `from_step` on, in step order (at most `limit`; 0: all)."""
        with self._lock:
            rows = self._db.execute("SELECT event FROM step_events WHERE session=? AND step>=? ORDER BY step LIMIT ?",
                                    (session, from_step, limit if limit > 0 else -1)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def last_step_event(self, session: str) -> dict[str, Any] | None:
        """The event of the session's latest recorded step, if any."""
        with self._lock:
            row = self._db.execute("SELECT event FROM step_events WHERE session=? ORDER BY step DESC LIMIT 1",
                                   (session,)).fetchone()
        return json.loads(row[0]) if row else None

    def truncate_step_events(self, session: str, after_step: int) -> None:
        """Forget the session's step events past `after_step` (it went back to that step's checkpoint)."""
        with self._tx() as db:
            db.execute("DELETE FROM step_events WHERE session=? AND step>?", (session, after_step))

    # -- the fleet's history (the newest FLEET_EVENTS_KEPT entries) --------------------------------------
    def add_fleet_event(self, event: FleetEvent) -> int:
        """Append to the fleet's history; returns the event's number (`seq`, increasing)."""
        with self._tx() as db:
            seq = db.execute("INSERT INTO fleet_events (at, kind, pnode, detail) VALUES (?, ?, ?, ?)",
                             (event.at, event.kind, event.pnode, event.detail)).lastrowid
            assert seq is not None
            if seq % 1000 == 0:
                db.execute("DELETE FROM fleet_events WHERE seq<=?", (seq - FLEET_EVENTS_KEPT,))
        return seq

    def list_fleet_events(self, after: int = 0, limit: int = 1000) -> list[FleetEvent]:
        """Events numbered after `after`, oldest first, at most `limit` of them (the oldest ones)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, at, kind, pnode, detail FROM fleet_events WHERE seq>? ORDER BY seq "
                                    "LIMIT ?", (after, max(1, limit))).fetchall()
        return [FleetEvent(r[2], r[3], r[4], r[1], r[0]) for r in rows]

    def count_validation_verdicts(self) -> dict[str, int]:
        """How many entries of the validation log carry each verdict."""
        with self._lock:
            rows = self._db.execute("SELECT verdict, COUNT(*) FROM validation_events GROUP BY verdict").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- tokens (only hashes of their secrets) -------------------------------------------------
    def put_token(self, rec: TokenRecord) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)",
                       (rec.name, rec.role, rec.key, rec.digest, rec.created_at, rec.expires_at))

    def token_by_key(self, key: str) -> TokenRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tokens WHERE key=?", (key,)).fetchone()
        return TokenRecord(*row) if row else None

    def list_tokens(self) -> list[TokenRecord]:
        with self._lock:
            return [TokenRecord(*r) for r in self._db.execute("SELECT * FROM tokens ORDER BY name")]

    def delete_token(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM tokens WHERE name=?", (name,)).rowcount > 0

    # -- standings and the validation log (kept when a PNode leaves: they follow its identity) -----------
    def get_standing(self, pnode: str) -> Standing:
        """The PNode's standing; an identity never charged nor trusted has the default one."""
        with self._lock:
            row = self._db.execute("SELECT * FROM standings WHERE pnode=?", (pnode,)).fetchone()
        return _standing(row) if row else Standing(pnode)

    def put_standing(self, rec: Standing) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO standings VALUES (?, ?, ?, ?, ?)",
                       (rec.pnode, int(rec.trusted), rec.charges, rec.quarantined_until, rec.reason))

    def list_standings(self) -> list[Standing]:
        """Every standing recorded, by PNode id."""
        with self._lock:
            return [_standing(r) for r in self._db.execute("SELECT * FROM standings ORDER BY pnode")]

    def add_validation_event(self, event: ValidationEvent) -> int:
        """Append to the log; returns the event's number (`seq`, increasing)."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO validation_events (at, network, session, step, unit, accused, verifier, referee, "
                "verdict, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.at, event.network, event.session, event.step, event.unit, event.accused, event.verifier,
                 event.referee, event.verdict, event.detail))
            seq = cursor.lastrowid
        assert seq is not None
        return seq

    def list_validation_events(self, session: str = "", network: str = "", limit: int = 1000) -> list[ValidationEvent]:
        """The newest `limit` events (of a session, of a network, both or all), oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where = [(col, value) for col, value in (("session", session), ("network", network)) if value]
        sql = ("SELECT seq, at, network, session, step, unit, accused, verifier, referee, verdict, detail "
               "FROM validation_events" + (" WHERE " + " AND ".join(f"{c}=?" for c, _ in where) if where else "")
               + " ORDER BY seq DESC LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (*(v for _, v in where), limit)).fetchall()
        return [ValidationEvent(network=r[2], session=r[3], step=r[4], unit=r[5], accused=r[6], verifier=r[7],
                                referee=r[8], verdict=r[9], detail=r[10], at=r[1], seq=r[0]) for r in reversed(rows)]


_PNODE_COLUMNS = "id, address, hardware, state, last_seen, load, paused, compute_seconds, compute_reported"


def _pnode(row: tuple[Any, ...]) -> PNodeRecord:
    return PNodeRecord(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], bool(row[6]), row[7], row[8])


def _standing(row: tuple[Any, ...]) -> Standing:
    return Standing(row[0], bool(row[1]), row[2], row[3], row[4])
