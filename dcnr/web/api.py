"""The orchestrator's HTTP surface as one WSGI application: /metrics, the dashboard's JSON API, its files.

Routes (the dashboard contract; `dashboard=False` leaves only /metrics):
- GET /metrics: Prometheus text (`dcnr.web.metrics`), to anyone;
- GET / and /static/<file>: the dashboard's bundled files (`dcnr/dashboard/static`), with their
  content types, never a file outside that folder;
- GET /api/...: JSON (`dcnr.web.views`). Anonymous callers may read unless the orchestrator's
  reads are private (`--private`: a bearer token is needed, as for the gRPC API); PNode and relay
  addresses are shown only to callers with a token;
- POST /api/sessions/<id>/suspend|resume and /api/pnodes/<id>/trust|untrust|release: always with
  `Authorization: Bearer <token>`, allowed to the roles the authorization table allows for the
  same gRPC call (`dcnr.security.authorization`). A suspend returns at once: the session stops
  after its current step.
Errors are `{"error": "..."}` with the HTTP status of their `dcnr.errors` class (401, 403, 404,
409, 400, 429). Every caller is held to the orchestrator's rate limit (per token, else per
address).
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from dcnr.errors import DcnrError, InvalidArgument, Unauthenticated
from dcnr.security import authorization
from dcnr.security.authorization import ANONYMOUS, ANONYMOUS_CALLER, Caller
from dcnr.security.ratelimit import RateLimiter
from dcnr.web.metrics import orchestrator_registry
from dcnr.web.server import HttpServer
from dcnr.web.views import Views

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from dcnr.orchestrator.app import Orchestrator

log = logging.getLogger("dcnr.web")

STATIC = Path(__file__).resolve().parents[1] / "dashboard" / "static"  # filled by the dashboard's build
MAX_LIMIT = 10_000  # the most entries one listing returns
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
               "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503,
               "DEADLINE_EXCEEDED": 504}
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                 ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
                 ".png": "image/png", ".ico": "image/x-icon", ".woff": "font/woff", ".woff2": "font/woff2",
                 ".wasm": "application/wasm", ".txt": "text/plain"}
SERVICE = "dcnr.v2.OrchestratorService/"
ACTIONS = {  # POST endpoint -> the gRPC call whose rule decides who may
    "suspend": "SuspendTrainSession", "resume": "StartTrainSession", "trust": "TrustPNode", "untrust": "TrustPNode",
    "release": "ReleasePNode"}


def serve(orch: Orchestrator, address: str, dashboard: bool = True) -> HttpServer:
    """The orchestrator's HTTP port on `address` (host:port; port 0: any free one): its metrics, and unless
    `dashboard` is off its dashboard and JSON API."""
    return HttpServer(HttpApi(orch, orchestrator_registry(orch), dashboard), address)


class HttpApi:
    """The WSGI application of one orchestrator's HTTP port."""

    def __init__(self, orch: Orchestrator, registry: CollectorRegistry, dashboard: bool = True,
                 static: Path | None = None) -> None:
        self.o = orch
        self.views = Views(orch)
        self.metrics = make_wsgi_app(registry)
        self.static = static or STATIC
        self.limiter = RateLimiter(orch.rate_limit, orch.rate_limit * 2)
        rules = [Rule("/metrics", endpoint="metrics", methods=["GET"])]
        if dashboard:
            rules += [Rule("/", endpoint="index", methods=["GET"]),
                      Rule("/static/<path:name>", endpoint="static", methods=["GET"])]
            rules += [Rule(path, endpoint=name, methods=["GET"]) for path, name in (
                ("/api/overview", "overview"), ("/api/pnodes", "pnodes"), ("/api/relays", "relays"),
                ("/api/networks", "networks"), ("/api/networks/<name>/graph", "graph"),
                ("/api/sessions", "sessions"), ("/api/sessions/<sid>/history", "history"),
                ("/api/sessions/<sid>/timeline", "timeline"), ("/api/validation", "validation"),
                ("/api/events", "events"))]
            rules += [Rule(f"/api/sessions/<target>/{action}", endpoint=action, methods=["POST"])
                      for action in ("suspend", "resume")]
            rules += [Rule(f"/api/pnodes/<target>/{action}", endpoint=action, methods=["POST"])
                      for action in ("trust", "untrust", "release")]
        self.routes = Map(rules)
        self.reads: dict[str, Callable[[Request, Mapping[str, Any], bool], Any]] = {
            "overview": lambda r, a, addresses: self.views.overview(addresses),
            "pnodes": lambda r, a, addresses: self.views.pnodes(addresses),
            "relays": lambda r, a, addresses: self.views.relays(addresses),
            "networks": lambda r, a, addresses: self.views.networks(),
            "graph": lambda r, a, addresses: self.views.graph(a["name"]),
            "sessions": lambda r, a, addresses: self.views.sessions(),
            "history": lambda r, a, addresses: self.views.history(a["sid"], _number(r, "from_step", 0)),
            "timeline": lambda r, a, addresses: self.views.timeline(a["sid"], _number(r, "step", None)),
            "validation": lambda r, a, addresses: self.views.validation(r.args.get("session", ""),
                                                                        _number(r, "limit", 1000, MAX_LIMIT, 1)),
            "events": lambda r, a, addresses: self.views.events(_number(r, "after", 0),
                                                                _number(r, "limit", 1000, MAX_LIMIT, 1)),
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.routes.bind_to_environ(environ).match()
        except HTTPException as exc:
            if request.path.startswith("/api/"):
                return _json({"error": exc.description or exc.name}, exc.code or 500)(environ, start_response)
            return exc(environ, start_response)
        if endpoint == "metrics":
            return self.metrics(environ, start_response)
        try:
            if endpoint in ("index", "static"):
                response = self._file("index.html" if endpoint == "index" else args["name"], environ)
            else:
                response = self._api(endpoint, request, args)
        except DcnrError as exc:
            response = _error(exc)
        except HTTPException as exc:
            response = exc.get_response(environ)
        except Exception:  # a bug: the caller learns nothing of the internals
            log.exception("HTTP %s %s failed", request.method, request.path)
            response = _json({"error": "internal error"}, 500)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response(environ, start_response)

    def _caller(self, request: Request) -> Caller:
        """Who calls: a bearer token's role, else anonymous (Unauthenticated for a token that is not one)."""
        header = request.headers.get("Authorization", "")
        if not header:
            return ANONYMOUS_CALLER
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be `Bearer <token>`")
        rec = self.o.tokens.authenticate(token)
        return Caller(rec.role, rec.name)

    def _api(self, endpoint: str, request: Request, args: Mapping[str, Any]) -> Response:
        caller = self._caller(request)
        self.limiter.take(f"token {caller.name}" if caller.role != ANONYMOUS else f"address {request.remote_addr}")
        if endpoint in self.reads:
            if caller.role == ANONYMOUS and not self.o.public_reads:
                raise Unauthenticated("this orchestrator's reads are private: pass a token "
                                      "(Authorization: Bearer <token>)")
            return _json(self.reads[endpoint](request, args, caller.role != ANONYMOUS))
        authorization.check(SERVICE + ACTIONS[endpoint], caller, self.o.public_reads)
        target = args["target"]
        if endpoint == "suspend":
            self.o.sessions.suspend(target)
            return _json(self.views.session(target))
        if endpoint == "resume":
            self.o.sessions.start(target)
            return _json(self.views.session(target))
        if endpoint == "release":
            self.o.standings.release(target, by=str(caller))
        else:
            self.o.standings.trust(target, endpoint == "trust", by=str(caller))
        return _json(self.views.pnode(target))

    def _file(self, name: str, environ: WSGIEnvironment) -> Response:
        """A file of the dashboard's folder, with its content type (NotFound outside the folder or for none)."""
        kind = CONTENT_TYPES.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0]
        response = send_from_directory(self.static, name, environ, mimetype=kind or "application/octet-stream")
        response.headers["Cache-Control"] = "no-cache"  # revalidate: a new build replaces the files
        return response


def _number(request: Request, name: str, default: Any, most: int | None = None, least: int = 0) -> Any:
    """An integer query parameter (between `least` and `most`), or `default` when it is not given."""
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {text!r}") from None
    if value < least or (most is not None and value > most):
        raise InvalidArgument(f"{name} must be between {least} and {most}, got {value}" if most is not None else
                              f"{name} must be at least {least}, got {value}")
    return value


def _json(body: Any, status: int = 200) -> Response:
    response = Response(json.dumps(body, allow_nan=False, separators=(",", ":")), status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _error(exc: DcnrError) -> Response:
    status = HTTP_STATUS.get(exc.status, 500)
    if status == 500:
        log.error("HTTP API call failed: %s: %s", type(exc).__name__, exc)
    response = _json({"error": str(exc) if status != 500 else "internal error"}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response
