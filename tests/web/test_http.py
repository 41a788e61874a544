"""The orchestrator's HTTP port: every API endpoint answers in the shape of the dashboard contract, actions need a
token with the role the authorization table names, private mode and --no-dashboard hold, the dashboard's files
are served with their content types and nothing outside their folder, and /metrics parses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tiny_lm_sessions import NETWORK, TEXTS

from dcnr.cluster import LocalCluster
from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.store import ValidationEvent
from dcnr.security.config import ClientConfig
from dcnr.transport.messages import Membership
from dcnr.web.api import HttpApi
from dcnr.web.metrics import orchestrator_registry
from dcnr.web.server import HttpServer

STEPS = 3
PNODE = {"id": str, "name": str, "address": str, "state": str, "connection": str, "trusted": bool, "charges": int,
         "quarantined_until": (float, type(None)), "hardware": dict, "load": float, "vnodes": list,
         "compute_seconds": float, "last_seen": float}
HARDWARE = {"cpu_cores", "memory_bytes", "device", "memory_budget_bytes", "threads"}
RELAY = {"id": str, "address": str, "state": str, "attached": int, "bytes_forwarded": int, "hop_bytes": int,
         "pnodes": list}
NETWORK_ROW = {"name": str, "vnodes": int, "step": int}
SESSION = {"id": str, "network": str, "dataset": str, "state": str, "step": int, "steps": int, "validation": str}
STEP = {"step": int, "loss": float, "learning_rates": dict, "tokens_per_second": float, "duration_seconds": float,
        "held_out_loss": (float, type(None)), "at": float}
SPAN = {"vnode": str, "pnode": str, "op": str, "micro_batch": int, "start": float, "end": float}
WIRE = {"from": str, "to": str, "vnode": str, "micro_batch": int, "op": str, "start": float, "end": float,
        "bytes": int}
VERDICT = {"seq": int, "at": float, "network": str, "session": str, "step": int, "unit": str, "accused": str,
           "verifier": str, "referee": str, "verdict": str, "detail": str}
EVENT = {"seq": int, "at": float, "kind": str, "pnode": str, "detail": str}


def shaped(value: Any, fields: dict[str, Any]) -> None:
    """`value` is an object with exactly `fields`, each of its type (an int is a float too, as in JSON)."""
    assert isinstance(value, dict) and set(value) == set(fields), (sorted(value), sorted(fields))
    for key, kind in fields.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:
            kinds = (*kinds, int)
        assert isinstance(value[key], kinds) and not (bool in kinds) ^ isinstance(value[key], bool), (key, value[key])


def call(url: str, method: str = "GET", token: str = "") -> tuple[int, Any, dict[str, str]]:
    """(status, body as JSON or bytes, headers) of one request."""
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, data, headers = reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        status, data, headers = exc.code, exc.read(), dict(exc.headers)
    kind = headers.get("Content-Type", "")
    return status, json.loads(data) if kind.startswith("application/json") else data, headers


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """An embedded orchestrator serving HTTP, two in-process PNodes, and a finished three-step session."""
    with LocalCluster(tmp_path_factory.mktemp("http"), 2, in_process=True, http=True) as cluster:
        c = cluster.client
        c.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
        c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
        c.create_network(NETWORK, name="lm")
        session = c.create_session("lm", "d", STEPS, batch_size=4, micro_batches=2, start=True)
        events = list(c.listen_session(session.id, timeout=300))
        assert events[-1].state == "completed", events[-1]
        yield cluster


def session_id(fleet: LocalCluster) -> str:
    return fleet.client.list_sessions()[0].id


def admin(fleet: LocalCluster) -> str:
    return ClientConfig.load(fleet.admin_config).token


def test_every_read_answers_in_the_contract_shape(fleet: LocalCluster) -> None:
    url, sid = fleet.http_url, session_id(fleet)
    status, overview, headers = call(url + "/api/overview")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert set(overview) == {"version", "time", "pnodes", "relays", "sessions", "networks"}
    assert isinstance(overview["version"], str) and isinstance(overview["time"], float)
    _, pnodes, _ = call(url + "/api/pnodes")
    assert len(pnodes) == 2
    for p in pnodes:
        shaped(p, PNODE)
        assert set(p["hardware"]) == HARDWARE and p["state"] == "alive" and p["connection"] == "direct"
        assert p["address"] == ""  # anonymous callers never see volunteers' addresses
        assert p["vnodes"] and all(v.startswith("lm/") for v in p["vnodes"]) and p["compute_seconds"] > 0
    assert {p["id"] for p in pnodes} == set(fleet.ids.values())
    _, with_token, _ = call(url + "/api/pnodes", token=admin(fleet))
    assert all(p["address"].startswith("127.0.0.1:") for p in with_token)
    _, relays, _ = call(url + "/api/relays")
    for r in relays:
        shaped(r, RELAY)
    assert relays[0]["id"] == "orchestrator"
    _, networks, _ = call(url + "/api/networks")
    (net,) = networks
    shaped(net, NETWORK_ROW)
    assert net == {"name": "lm", "vnodes": net["vnodes"], "step": STEPS}
    _, graph, _ = call(url + "/api/networks/lm/graph")
    assert set(graph) == {"nodes", "edges"} and len(graph["nodes"]) == net["vnodes"]
    for n in graph["nodes"]:
        shaped(n, {"id": str, "type": str, "pnode": (str, type(None))})
    ids = {n["id"] for n in graph["nodes"]}
    assert graph["edges"] and all(set(e) == {"from", "to"} and {e["from"], e["to"]} <= ids for e in graph["edges"])
    _, sessions, _ = call(url + "/api/sessions")
    shaped(sessions[0], SESSION)
    assert sessions[0]["state"] == "completed" and sessions[0]["step"] == STEPS
    _, history, _ = call(url + f"/api/sessions/{sid}/history")
    assert [h["step"] for h in history] == [1, 2, 3]
    for h in history:
        shaped(h, STEP)
        assert h["loss"] > 0 and h["tokens_per_second"] > 0 and "lm_head_lr" in h["learning_rates"]
    assert [h["step"] for h in call(url + f"/api/sessions/{sid}/history?from_step=2")[1]] == [2, 3]
    _, timeline, _ = call(url + f"/api/sessions/{sid}/timeline")
    assert set(timeline) == {"step", "pnodes", "spans", "wire"} and timeline["step"] == STEPS
    assert sorted(timeline["pnodes"]) == sorted(fleet.ids.values()) and timeline["spans"] and timeline["wire"]
    for s in timeline["spans"]:
        shaped(s, SPAN)
    for w in timeline["wire"]:
        shaped(w, WIRE)
    assert call(url + f"/api/sessions/{sid}/timeline?step=1")[1]["step"] == 1
    _, validation, _ = call(url + f"/api/validation?session={sid}&limit=5")
    assert 0 < len(validation) <= 5
    for v in validation:
        shaped(v, VERDICT)
    _, events, _ = call(url + "/api/events")
    assert [e["kind"] for e in events[:2]] == ["joined", "joined"]
    for e in events:
        shaped(e, EVENT)
    assert call(url + f"/api/events?after={events[-1]['seq']}")[1] == []


def test_bad_requests_are_json_errors(fleet: LocalCluster) -> None:
    url, sid = fleet.http_url, session_id(fleet)
    for path, status in ((f"/api/sessions/{sid}/timeline?step=999", 404), ("/api/sessions/nope/history", 404),
                         ("/api/networks/nope/graph", 404), ("/api/validation?limit=0", 400),
                         ("/api/events?after=x", 400), ("/api/nothing", 404)):
        got, body, _ = call(url + path)
        assert got == status and set(body) == {"error"} and body["error"], path
    got, body, headers = call(url + "/api/pnodes", token="dcnr_0123456789abcdef_" + "x" * 43)
    assert got == 401 and headers["WWW-Authenticate"] == "Bearer" and "token" in body["error"]
    assert call(url + "/api/overview", method="POST")[0] == 405


def test_actions_need_a_token_with_the_role_the_table_names(fleet: LocalCluster) -> None:
    url, sid = fleet.http_url, session_id(fleet)
    operator = admin(fleet)
    researcher = fleet.client.create_token("reader", "researcher")
    pnode = sorted(fleet.ids.values())[0]
    status, body, _ = call(url + f"/api/pnodes/{pnode}/trust", "POST")
    assert status == 401 and "credential" in body["error"]
    status, body, _ = call(url + f"/api/pnodes/{pnode}/trust", "POST", researcher)
    assert status == 403 and "researcher" in body["error"]
    status, body, _ = call(url + f"/api/pnodes/{pnode}/trust", "POST", operator)
    assert status == 200 and body["trusted"] is True and body["id"] == pnode
    shaped(body, PNODE)
    status, body, _ = call(url + f"/api/pnodes/{pnode}/untrust", "POST", operator)
    assert status == 200 and body["trusted"] is False
    status, body, _ = call(url + f"/api/pnodes/{pnode}/release", "POST", operator)
    assert status == 409 and "not quarantined" in body["error"]
    assert call(url + "/api/pnodes/pn-nobody/trust", "POST", operator)[0] == 404
    status, body, _ = call(url + f"/api/sessions/{sid}/suspend", "POST")
    assert status == 401
    status, body, _ = call(url + f"/api/sessions/{sid}/suspend", "POST", researcher)
    assert status == 409 and "completed" in body["error"]  # allowed, but a finished session stays finished
    status, body, _ = call(url + f"/api/sessions/{sid}/resume", "POST", researcher)
    assert status == 409
    assert call(url + "/api/sessions/nope/resume", "POST", operator)[0] == 404
    trusted = [e for e in fleet.client.validation_events() if e.verdict in ("trusted", "untrusted")]
    assert [e.detail for e in trusted] == ["by operator admin"] * 2


def test_a_suspend_and_a_resume_act_on_a_live_session(fleet: LocalCluster) -> None:
    c = fleet.client
    session = c.create_session("lm", "d", 50, batch_size=4, micro_batches=2)
    token = admin(fleet)
    status, body, _ = call(fleet.http_url + f"/api/sessions/{session.id}/resume", "POST", token)
    assert status == 200 and body["id"] == session.id and body["state"] == "running"
    status, body, _ = call(fleet.http_url + f"/api/sessions/{session.id}/suspend", "POST", token)
    assert status == 200 and body["state"] in ("running", "suspended")  # it stops after its current step
    fleet.wait_for(lambda: c.list_sessions()[-1].state == "suspended", "the session suspending", 120)
    c.delete_session(session.id)


def test_metrics_parse_and_hold_the_fleet_and_the_session(fleet: LocalCluster) -> None:
    status, text, headers = call(fleet.http_url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    names = {name for name, _ in samples}
    for name in ("dcnr_fleet_pnodes", "dcnr_fleet_relayed_pnodes", "dcnr_fleet_pnode_load",
                 "dcnr_fleet_pnode_heartbeat_age_seconds", "dcnr_fleet_pnode_vnodes",
                 "dcnr_fleet_pnode_compute_seconds_total", "dcnr_relay_forwarded_bytes_total",
                 "dcnr_relay_attached_pnodes", "dcnr_sessions", "dcnr_session_loss", "dcnr_session_tokens_per_second",
                 "dcnr_session_step_duration_seconds_bucket", "dcnr_session_step_duration_seconds_count",
                 "dcnr_session_trained_tokens_total", "dcnr_validation_verdicts_total",
                 "dcnr_validation_samples_total", "dcnr_orchestrator_info"):
        assert name in names, name
    assert samples[("dcnr_fleet_pnodes", (("state", "alive"),))] == 2
    sid = session_id(fleet)
    assert samples[("dcnr_session_loss", (("session", sid),))] > 0
    assert samples[("dcnr_session_tokens_per_second", (("session", sid),))] > 0
    assert samples[("dcnr_session_step_duration_seconds_count", (("network", "lm"),))] >= STEPS
    assert samples[("dcnr_session_trained_tokens_total", (("network", "lm"),))] >= STEPS * 4 * 64 * 0.99
    assert samples[("dcnr_validation_samples_total", ())] >= 1
    for pnode in fleet.ids.values():
        assert samples[("dcnr_fleet_pnode_compute_seconds_total", (("pnode", pnode),))] > 0
        assert 0 <= samples[("dcnr_fleet_pnode_heartbeat_age_seconds", (("pnode", pnode),))] < 60


def test_the_orchestrator_stops_its_http_port_with_itself(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state")
    orch.start(http_address="127.0.0.1:0")
    url = f"http://127.0.0.1:{orch.http_port}"
    assert call(url + "/api/sessions")[0] == 200
    orch.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/api/sessions", timeout=5)


# -- private mode, --no-dashboard, the dashboard's files ------------------------------------------------
def test_private_reads_need_a_token_and_no_dashboard_leaves_only_metrics(tmp_path: Path) -> None:
    private = Orchestrator(tmp_path / "private", public_reads=False)
    bare = Orchestrator(tmp_path / "bare")
    try:
        private.start(http_address="127.0.0.1:0")
        bare.start(http_address="127.0.0.1:0", dashboard=False)
        token = ClientConfig.load(private.admin_config).token
        url = f"http://127.0.0.1:{private.http_port}"
        for path in ("/api/overview", "/api/sessions", "/api/events", "/api/validation"):
            status, body, _ = call(url + path)
            assert status == 401 and "private" in body["error"], path
            assert call(url + path, token=token)[0] == 200, path
        assert call(url + "/metrics")[0] == 200  # Prometheus scrapes without a token
        url = f"http://127.0.0.1:{bare.http_port}"
        assert call(url + "/metrics")[0] == 200
        for path in ("/", "/static/app.js", "/api/overview", "/api/sessions"):
            assert call(url + path, token=token)[0] == 404, path
        assert call(url + "/api/sessions/x/suspend", "POST", token)[0] == 404
    finally:
        private.stop()
        bare.stop()


def test_the_dashboard_files_come_with_their_types_and_nothing_else_does(tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>dcnr</title>")
    (static / "assets" / "app.js").write_text("console.log(1)")
    (static / "style.css").write_text("body{}")
    (static / "logo.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("secret")
    orch = Orchestrator(tmp_path / "state")
    server = HttpServer(HttpApi(orch, orchestrator_registry(orch), static=static), "127.0.0.1:0")
    url = f"http://127.0.0.1:{server.port}"
    try:
        for path, kind, text in (("/", "text/html", b"<!doctype html>"), ("/static/index.html", "text/html", b"<!"),
                                 ("/static/assets/app.js", "text/javascript", b"console"),
                                 ("/static/style.css", "text/css", b"body"),
                                 ("/static/logo.svg", "image/svg+xml", b"<")):
            status, body, headers = call(url + path)
            assert status == 200 and headers["Content-Type"].split(";")[0] == kind and body.startswith(text), path
            assert headers["X-Content-Type-Options"] == "nosniff"
        for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/assets/../../secret.txt",
                     "/static/..%2fsecret.txt", "/static//etc/passwd", "/static/missing.js", "/static/assets"):
            status, body, _ = call(url + path)
            assert status == 404 and b"secret" not in body, path
    finally:
        server.stop()
        orch.stop()


def test_views_of_a_quarantined_and_a_relayed_pnode(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state")
    try:
        hardware = {"memory_budget_bytes": 2**30, "cpu_cores": 4, "threads": 2, "device": "cpu"}
        orch.fleet.register(Membership("pn-q", "127.0.0.1:9001", hardware, "2.3.0", name="box"))
        orch.fleet.register(Membership("pn-r", f"127.0.0.1:{orch.relay_port}/pn-r", hardware, "2.3.0"))
        orch.standings.charge("pn-q", "forged a gradient")
        orch.store.add_validation_event(ValidationEvent("n", "s", 1, "u", "pn-q", "pn-r", "", "fail", "forged"))
        api = HttpApi(orch, orchestrator_registry(orch))
        views = {p["id"]: p for p in api.views.pnodes()}
        assert views["pn-q"]["state"] == "quarantined" and views["pn-q"]["quarantined_until"] > 0
        assert views["pn-q"]["charges"] == 1 and views["pn-q"]["name"] == "box"
        assert views["pn-r"]["connection"] == "relayed via orchestrator" and views["pn-r"]["state"] == "alive"
        assert [e["kind"] for e in api.views.events()] == ["joined", "joined", "quarantined"]
    finally:
        orch.stop()
