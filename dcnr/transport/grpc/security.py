"""TLS on every gRPC endpoint, and every call checked against the authorization table.

- `Identity` holds this process's key and certificate; a renewed certificate replaces it and
  is presented on new connections (servers through dynamic credentials, clients through
  channels opened afresh: see `ChannelPool`).
- `add_tls_port` serves a port with TLS; `mutual=True` demands a client certificate from
  our CA (PNode ports, the orchestrator's peer port); without it callers prove themselves
  with a bearer token, or are anonymous.
- `secure_channel` dials with TLS, checking that the server's certificate names the
  expected role (`dcnr.security.pki.ORCHESTRATOR_TLS_NAME` / `PNODE_TLS_NAME`), presenting
  our certificate and/or a token. `ChannelPool` also dials relayed PNodes, whose address
  is "relay-host:port/PNODE-ID": a channel to the relay (`RELAY_TLS_NAME`) whose calls name
  the PNode in `TO_KEY` metadata.
- `secured` wraps every RPC of a servicer once: the caller is resolved (verified
  certificate, else bearer token, else anonymous), rate-limited, checked against
  `dcnr.security.authorization.RULES`, and handed to the handler as `current_caller()`.
  Where an `Authority` accepts relayed calls (PNodes and relays), a relay's call made for a
  PNode attached to it (`ON_BEHALF_KEY`: that PNode's certificate) counts as that PNode's.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from dcnr.errors import Unauthenticated
from dcnr.security import authorization, pki
from dcnr.security.authorization import ANONYMOUS, ANONYMOUS_CALLER, PNODE, RELAY, Caller
from dcnr.security.pki import RELAY_TLS_NAME, Credentials
from dcnr.security.ratelimit import RateLimiter
from dcnr.security.tokens import Tokens

S = TypeVar("S")
_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("dcnr_caller", default=ANONYMOUS_CALLER)
TO_KEY = "dcnr-to"  # metadata: the relayed PNode a call to a relay is for
ON_BEHALF_KEY = "dcnr-on-behalf-bin"  # metadata: the certificate (PEM) of the PNode a relay calls for


def route(address: str) -> tuple[str, str]:
    """("host:port", PNode id) of a relayed PNode's address "host:port/PNODE-ID"; (address, "") otherwise."""
    where, _, pnode = address.partition("/")
    return where, pnode


def current_caller() -> Caller:
    """The caller of the RPC this thread is serving (set by `secured`)."""
    return _CALLER.get()


class Identity:
    """This process's TLS credentials; `update` swaps in a renewed certificate."""

    def __init__(self, creds: Credentials) -> None:
        self._creds = creds
        self.generation = 0
        self._lock = threading.Lock()

    @property
    def creds(self) -> Credentials:
        with self._lock:
            return self._creds

    def update(self, creds: Credentials) -> None:
        with self._lock:
            self._creds = creds
            self.generation += 1


def _server_config(creds: Credentials) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(creds.key_pem, creds.cert_pem)],
                                                     root_certificates=creds.ca_pem)


def add_tls_port(server: grpc.Server, address: str, identity: Identity, mutual: bool) -> int:
    """Listen on `address` with TLS presenting `identity` (its newest certificate for each new connection);
    returns the port (0 if it could not be bound)."""
    seen = [identity.generation]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        if identity.generation == seen[0]:
            return None  # unchanged
        seen[0] = identity.generation
        return _server_config(identity.creds)

    creds = grpc.dynamic_ssl_server_credentials(_server_config(identity.creds), fetch,
                                                require_client_authentication=mutual)
    return server.add_secure_port(address, creds)


def secure_channel(address: str, ca_pem: bytes, tls_name: str, options: list[tuple[str, Any]],
                   identity: Identity | None = None, token: str = "") -> grpc.Channel:
    """A TLS channel to `address` whose server must hold a certificate from our CA naming `tls_name`;
    presenting `identity`'s certificate and/or `token`."""
    creds = identity.creds if identity is not None else None
    channel_creds = grpc.ssl_channel_credentials(ca_pem, creds.key_pem if creds else None,
                                                 creds.cert_pem if creds else None)
    if token:
        channel_creds = grpc.composite_channel_credentials(channel_creds, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(address, channel_creds, options=[*options, ("grpc.ssl_target_name_override", tls_name)])


class _Details(namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                                        "compression")), grpc.ClientCallDetails):
    pass


class _Routed(grpc.UnaryUnaryClientInterceptor):
    """Names the relayed PNode a call through a relay is for."""

    def __init__(self, pnode: str) -> None:
        self.pnode = pnode

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), (TO_KEY, self.pnode)]
        return continuation(_Details(details.method, details.timeout, metadata, details.credentials,
                                     details.wait_for_ready, details.compression), request)


class ChannelPool:
    """One channel per address, opened with our newest certificate: after a renewal new channels are
    opened and the previous generation is closed at the next renewal (calls in flight finish).
    Relayed PNodes ("host:port/PNODE-ID") share their relay's connection."""

    def __init__(self, ca_pem: bytes, tls_name: str, options: list[tuple[str, Any]], identity: Identity) -> None:
        self.ca_pem, self.tls_name, self.options, self.identity = ca_pem, tls_name, options, identity
        self._channels: dict[str, grpc.Channel] = {}
        self._retired: list[grpc.Channel] = []
        self._generation = identity.generation
        self._lock = threading.Lock()

    def get(self, address: str) -> grpc.Channel:
        with self._lock:
            if self.identity.generation != self._generation:
                for old in self._retired:
                    old.close()
                self._retired = list(self._channels.values())
                self._channels.clear()
                self._generation = self.identity.generation
            where, pnode = route(address)
            found = self._channels.get(where)
            if found is None:
                found = self._channels[where] = secure_channel(where, self.ca_pem, RELAY_TLS_NAME if pnode else
                                                               self.tls_name, self.options, self.identity)
            return grpc.intercept_channel(found, _Routed(pnode)) if pnode else found

    def close(self) -> None:
        with self._lock:
            for channel in [*self._channels.values(), *self._retired]:
                channel.close()
            self._channels.clear()
            self._retired.clear()


# -- checking calls ---------------------------------------------------------------------------------
def caller_of(context: grpc.ServicerContext, tokens: Tokens | None, relayed: bool = False) -> Caller:
    """Who is calling: the role and id of a verified client certificate, else a bearer token's role and
    name, else anonymous (a token that is malformed, unknown or expired is Unauthenticated). With `relayed`,
    a relay calling for a PNode attached to it stands for that PNode."""
    pems = context.auth_context().get("x509_pem_cert")
    if pems:
        peer = pki.peer_of(pems[0])
        behalf = next((v for k, v in context.invocation_metadata() if k == ON_BEHALF_KEY), b"") if (
            relayed and peer.role == RELAY) else b""
        if behalf:
            assert isinstance(behalf, bytes)
            forwarded = pki.peer_of(behalf)
            if forwarded.role != PNODE:
                raise Unauthenticated("a relay may only call in the name of a PNode")
            return Caller(forwarded.role, forwarded.id, behalf)
        return Caller(peer.role, peer.id, pems[0])
    header = next((str(v) for k, v in context.invocation_metadata() if k == "authorization"), "")
    if not header:
        return ANONYMOUS_CALLER
    scheme, _, token = header.partition(" ")
    if tokens is None or scheme.lower() != "bearer":
        raise Unauthenticated("this endpoint accepts no bearer tokens")
    rec = tokens.authenticate(token)
    return Caller(rec.role, rec.name)


def _peer_host(context: grpc.ServicerContext) -> str:
    peer = context.peer()  # "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678"
    return peer.rpartition(":")[0] or peer


@dataclass
class Authority:
    """How one server checks its calls: tokens it accepts (None: certificates only), whether anonymous
    callers may read public listings, the per-identity rate limit, and whether a relay's calls for its
    PNodes count as theirs (PNodes' and relays' servers)."""

    tokens: Tokens | None = None
    public_reads: bool = True
    limiter: RateLimiter | None = None
    relayed: bool = False

    def admit(self, method: str, context: grpc.ServicerContext) -> Caller:
        caller = caller_of(context, self.tokens, self.relayed)
        if self.limiter is not None:
            self.limiter.take(f"{caller.role} {caller.name}" if caller.role != ANONYMOUS else _peer_host(context))
        authorization.check(method, caller, self.public_reads)
        return caller


def secured(servicer: S, service: str, authority: Authority) -> S:
    """Check every RPC of `servicer` (methods named like RPCs, CamelCase) as `service`'s ("dcnr.v2.X")
    before it runs; returns the same object. Wrap with `guarded` afterwards: refusals are our errors."""
    for name, method in inspect.getmembers(servicer, callable):
        if name[:1].isupper():
            setattr(servicer, name, _checked(method, f"{service}/{name}", authority))
    return servicer


def _checked(method: Callable[..., Any], full_name: str, authority: Authority) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token = _CALLER.set(authority.admit(full_name, context))
            try:
                yield from method(request, context)
            finally:
                _CALLER.reset(token)
        return streaming

    @functools.wraps(method)
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        token = _CALLER.set(authority.admit(full_name, context))
        try:
            return method(request, context)
        finally:
            _CALLER.reset(token)
    return unary
