"""Bearer tokens for people: operators and researchers.

A token is `dcnr_<key>_<secret>`: `key` finds its record, and only the SHA-256 of the
secret is stored, compared in constant time. It is shown once, when created. Tokens
carry a role and an optional expiry; revoking one deletes its record.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from dcnr.errors import AlreadyExists, InvalidArgument, Unauthenticated

TOKEN_ROLES = ("operator", "researcher")  # the roles a token can carry
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TOKEN = re.compile(r"dcnr_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class TokenRecord:
    name: str
    role: str
    key: str  # public part of the token: finds the record
    digest: str  # sha256 of the secret part
    created_at: float
    expires_at: float = 0.0  # Unix time; 0: never


class TokenStore(Protocol):
    def put_token(self, rec: TokenRecord) -> None: ...
    def token_by_key(self, key: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def delete_token(self, name: str) -> bool: ...


def parse_duration(text: str) -> float:
    """Seconds in `30d`, `12h`, `90m`, `3600s` or `2w`."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not m or int(m.group(1)) == 0:
        raise InvalidArgument(f"duration must be a positive number with a unit s, m, h, d or w (e.g. 30d), "
                              f"got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    def __init__(self, store: TokenStore) -> None:
        self.store = store

    def create(self, name: str, role: str, expires_in: float | None = None) -> str:
        """A new token (returned once: only its hash is kept)."""
        if not NAME.fullmatch(name):
            raise InvalidArgument(f"token name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
        if role not in TOKEN_ROLES:
            raise InvalidArgument(f"token role must be one of {', '.join(TOKEN_ROLES)}, got {role!r}")
        if expires_in is not None and not (math.isfinite(expires_in) and expires_in >= 0):
            raise InvalidArgument(f"a token's lifetime must be a number of seconds (0: never), got {expires_in}")
        if any(t.name == name for t in self.store.list_tokens()):
            raise AlreadyExists(f"a token named {name!r} exists; revoke it first or choose another name")
        key, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = time.time()
        self.store.put_token(TokenRecord(name, role, key, _digest(secret), now,
                                         now + expires_in if expires_in else 0.0))
        return f"dcnr_{key}_{secret}"

    def list(self) -> list[TokenRecord]:
        return sorted(self.store.list_tokens(), key=lambda t: t.name)

    def revoke(self, name: str) -> bool:
        return self.store.delete_token(name)

    def authenticate(self, token: str) -> TokenRecord:
        """The record of a valid token; Unauthenticated for a malformed, unknown, revoked or expired one."""
        m = _TOKEN.fullmatch(token.strip())
        rec = self.store.token_by_key(m.group(1)) if m else None
        candidate = _digest(m.group(2)) if m else _digest(token)
        if rec is None or not hmac.compare_digest(candidate, rec.digest):
            raise Unauthenticated("unknown or revoked token")
        if rec.expires_at and rec.expires_at < time.time():
            raise Unauthenticated(f"token {rec.name!r} expired")
        return rec
