"""A stand-in for the orchestrator's HTTP server: the dashboard's static files and canned JSON shaped as its
/api answers, for browser tests of what a real cluster rarely shows on demand: a quarantined PNode, a relayed
one, failed checks, a private orchestrator, tokens of each role.

`FakeOrchestrator` serves on a free loopback port in a thread. Its session trains by the clock (one step
every `step_seconds` while running); `kill` makes a PNode dead; every request is recorded with its
Authorization header. Tokens: `OPERATOR` may do everything, `RESEARCHER` may suspend and resume sessions.
"""

from __future__ import annotations

import json
import math
import mimetypes
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from dcnr.dashboard import STATIC

OPERATOR, RESEARCHER = "operator-token", "researcher-token"
KEPT_STEPS = 20

GiB = 2**30
VNODES = [("embed", "embedding"), ("block0", "transformer_block"), ("block1", "transformer_block"),
          ("head", "linear"), ("loss", "cross_entropy")]
EDGES = [("embed", "block0"), ("block0", "block1"), ("block1", "head"), ("head", "loss")]


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class FakeOrchestrator:
    private: bool = False  # every /api GET needs a token, as with --private
    step_seconds: float = 0.3
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        now = time.time()
        self.started = now
        self.pnodes: dict[str, dict[str, Any]] = {}
        for i, (name, connection, trusted, state) in enumerate([
                ("p0", "direct", True, "alive"), ("p1", "direct", False, "alive"),
                ("p2", "relayed via r-9f3a", False, "alive"), ("mallory", "direct", False, "quarantined")]):
            pid = f"pn-{i:02d}{name}-5e1d0c7a"
            self.pnodes[pid] = {
                "id": pid, "name": name, "address": f"10.0.0.{i + 10}:5005{i}", "state": state,
                "connection": connection,
                "trusted": trusted, "charges": 2 if state == "quarantined" else 0,
                "quarantined_until": now + 3600 if state == "quarantined" else None,
                "hardware": {"cpu_cores": 8 * (i + 1), "memory_bytes": 16 * GiB * (i + 1), "device": "cpu",
                             "memory_budget_bytes": 8 * GiB, "threads": 2},
                "load": 0.0, "vnodes": [], "compute_seconds": 0.0, "last_seen": now}
        ids = list(self.pnodes)
        self.placement = {"embed": ids[0], "block0": ids[0], "block1": ids[1], "head": ids[2], "loss": ids[2]}
        for vnode, pid in self.placement.items():
            self.pnodes[pid]["vnodes"].append(f"tiny/{vnode}")
        self.relays = [{"id": "r-9f3a", "address": "10.0.0.2:50060", "state": "alive", "attached": 1,
                        "bytes_forwarded": 48_000_000, "hop_bytes": 41_000_000, "pnodes": [ids[2]]}]
        self.session = {"id": "s-1", "network": "tiny", "dataset": "corpus", "state": "running", "step": 0,
                        "steps": 10_000, "validation": True}
        self.trained = 0.0  # seconds the session spent running before `resumed_at`
        self.resumed_at: float | None = now
        self.events = [{"seq": i + 1, "at": now - 60 + i, "kind": "joined", "pnode": pid, "detail": ""}
                       for i, pid in enumerate(ids)]
        self.events.append({"seq": len(ids) + 1, "at": now - 30, "kind": "quarantined", "pnode": ids[3],
                            "detail": "re-executed unit did not match (2 charges)"})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-orchestrator", daemon=True)

    # -- the fake world ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> FakeOrchestrator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def pnode_id(self, name: str) -> str:
        return next(p["id"] for p in self.pnodes.values() if p["name"] == name)

    def kill(self, name: str) -> None:
        with self.lock:
            self.pnodes[self.pnode_id(name)]["state"] = "dead"
            self._event("dead", self.pnode_id(name), "missed 3 heartbeats")

    def roll_back(self, step: int) -> None:
        """Put the session back to `step` (as a restore from a checkpoint does: later steps are forgotten)."""
        with self.lock:
            self.trained = step * self.step_seconds
            self.resumed_at = time.time() if self.resumed_at is not None else None

    def _event(self, kind: str, pnode: str, detail: str) -> None:
        self.events.append({"seq": len(self.events) + 1, "at": time.time(), "kind": kind, "pnode": pnode,
                            "detail": detail})

    def _steps(self) -> int:
        running = self.trained + (time.time() - self.resumed_at if self.resumed_at is not None else 0.0)
        return min(self.session["steps"], int(running / self.step_seconds))

    def _tick(self) -> None:
        """Bring the world up to now: steps trained, PNodes' contribution and heartbeats."""
        steps = self._steps()
        self.session["step"] = steps
        now = time.time()
        for p in self.pnodes.values():
            if p["state"] != "dead":
                p["last_seen"] = now - 0.4
                p["compute_seconds"] = round(0.05 * steps * len(p["vnodes"]), 3)
                p["load"] = float(len(p["vnodes"]) % 3) if self.resumed_at is not None else 0.0

    @staticmethod
    def point(step: int) -> dict[str, Any]:
        lr = 3e-3 * min(1.0, (step + 1) / 20)
        return {"step": step, "loss": round(2.0 + 5.5 * math.exp(-step / 40) + 0.05 * math.sin(step), 5),
                "learning_rates": {v: (lr / 10 if v == "embed" else lr) for v, _ in VNODES},
                "tokens_per_second": 1500 + 40 * math.sin(step / 3), "duration_seconds": 0.35,
                "held_out_loss": round(2.2 + 5.5 * math.exp(-step / 40), 5) if step % 10 == 9 else None,
                "at": time.time()}

    def timeline(self, step: int) -> dict[str, Any]:
        spans, wire, t = [], [], 0.0
        for mb in range(2):
            for vnode, _ in VNODES:
                pnode = self.placement[vnode]
                spans.append({"vnode": vnode, "pnode": pnode, "op": "fwd", "micro_batch": mb, "start": t,
                              "end": t + 0.02})
                t += 0.02
                nxt = next((b for a, b in EDGES if a == vnode), None)
                if nxt and self.placement[nxt] != pnode:
                    wire.append({"from": pnode, "to": self.placement[nxt], "vnode": vnode, "micro_batch": mb,
                                 "op": "fwd", "start": t, "end": t + 0.01, "bytes": 262144})
                    t += 0.01
            for vnode, _ in reversed(VNODES):
                spans.append({"vnode": vnode, "pnode": self.placement[vnode], "op": "bwd", "micro_batch": mb,
                              "start": t, "end": t + 0.03})
                t += 0.03
        for vnode, _ in VNODES:
            spans.append({"vnode": vnode, "pnode": self.placement[vnode], "op": "update", "micro_batch": 0,
                          "start": t, "end": t + 0.01})
        return {"step": step, "pnodes": sorted(set(self.placement.values())), "spans": spans, "wire": wire}

    def validation(self) -> list[dict[str, Any]]:
        ids = list(self.pnodes)
        return [{"seq": 1, "at": self.started + 5, "network": "tiny", "session": "s-1", "step": 3,
                 "unit": "block1/fwd/0", "accused": ids[1], "verifier": ids[0], "referee": None, "verdict": "pass",
                 "detail": ""},
                {"seq": 2, "at": self.started + 9, "network": "tiny", "session": "s-1", "step": 7,
                 "unit": "head/bwd/1", "accused": ids[3], "verifier": ids[0], "referee": ids[1], "verdict": "fail",
                 "detail": "output differs from re-execution (max |Δ| 0.41)"}]

    # -- HTTP --------------------------------------------------------------------------------------------
    def role(self, authorization: str | None) -> str | None:
        token = authorization.removeprefix("Bearer ") if authorization else None
        return {OPERATOR: "operator", RESEARCHER: "researcher"}.get(token or "")

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        self._tick()
        arg = {k: v[0] for k, v in query.items()}
        overview = {"version": "0.1.0", "time": time.time(), "pnodes": list(self.pnodes.values()),
                    "relays": self.relays, "sessions": [self.session],
                    "networks": [{"name": "tiny", "vnodes": len(VNODES), "step": self.session["step"]}]}
        parts = path.strip("/").split("/")[1:]
        if parts == ["overview"]:
            return 200, overview
        if parts in (["pnodes"], ["relays"], ["sessions"], ["networks"]):
            return 200, overview[parts[0]]
        if parts == ["networks", "tiny", "graph"]:
            return 200, {"nodes": [{"id": v, "type": t, "pnode": self.placement[v]} for v, t in VNODES],
                         "edges": [{"from": a, "to": b} for a, b in EDGES]}
        if parts[:2] == ["sessions", "s-1"] and parts[2:] == ["history"]:
            return 200, [self.point(s) for s in range(int(arg.get("from_step", 0)), self.session["step"])]
        if parts[:2] == ["sessions", "s-1"] and parts[2:] == ["timeline"]:
            newest = self.session["step"] - 1
            step = int(arg.get("step", newest))
            if step < 0 or step > newest or step <= newest - KEPT_STEPS:
                return 404, {"error": f"no timeline kept for step {step}"}
            return 200, self.timeline(step)
        if parts == ["validation"]:
            return 200, self.validation()[-int(arg.get("limit", 1000)):]
        if parts == ["events"]:
            return 200, [e for e in self.events if e["seq"] > int(arg.get("after", 0))]
        return 404, {"error": f"no such resource: {path}"}

    def post(self, path: str, role: str | None) -> tuple[int, Any]:
        if role is None:
            return 401, {"error": "a valid bearer token is needed"}
        parts = path.strip("/").split("/")[1:]
        if len(parts) != 3:
            return 404, {"error": f"no such action: {path}"}
        kind, target, action = parts
        if kind == "sessions" and target == "s-1" and action in ("suspend", "resume"):
            if action == "suspend" and self.resumed_at is not None:
                self.trained += time.time() - self.resumed_at
                self.resumed_at = None
                self.session["state"] = "suspended"
            elif action == "resume" and self.resumed_at is None:
                self.resumed_at = time.time()
                self.session["state"] = "running"
            return 200, self.session
        if kind == "pnodes" and target in self.pnodes and action in ("trust", "untrust", "release"):
            if role != "operator":
                return 403, {"error": f"a {role} may not {action} PNodes"}
            p = self.pnodes[target]
            if action == "release":
                if p["state"] != "quarantined":
                    return 409, {"error": f"{p['name']} is not quarantined"}
                p.update(state="alive", charges=0, quarantined_until=None)
                self._event("released", target, "by an operator")
            else:
                p["trusted"] = action == "trust"
            return 200, p
        return 404, {"error": f"no such action: {path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test output stays readable
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, value: Any) -> None:
                self._send(status, json.dumps(value).encode(), "application/json")

            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.requests.append(Request("GET", url.path, self.headers.get("Authorization")))
                if url.path == "/" or url.path.startswith("/static/"):
                    name = "index.html" if url.path == "/" else unquote(url.path.removeprefix("/static/"))
                    file = (STATIC / name).resolve()
                    if file.parent != STATIC or not file.is_file():
                        return self._json(404, {"error": "no such file"})
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    return self._send(200, file.read_bytes(), kind)
                if not url.path.startswith("/api/"):
                    return self._json(404, {"error": "no such resource"})
                with fake.lock:
                    if fake.private and fake.role(self.headers.get("Authorization")) is None:
                        return self._json(401, {"error": "this orchestrator is private"})
                    status, value = fake.get(url.path, parse_qs(url.query))
                self._json(status, value)

            def do_POST(self) -> None:
                url = urlparse(self.path)
                fake.requests.append(Request("POST", url.path, self.headers.get("Authorization")))
                with fake.lock:
                    status, value = fake.post(url.path, fake.role(self.headers.get("Authorization")))
                self._json(status, value)

        return Handler
