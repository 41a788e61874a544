"""`dcnr token`: tokens for operators and researchers — create, list, revoke (operators only)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, out, table
from dcnr.errors import NotFound
from dcnr.security.tokens import TOKEN_ROLES, parse_duration

Name = Annotated[str, typer.Argument(help="Token name (letters, digits, '.', '_', '-').")]


def token_create(name: Name,
                 role: Annotated[str, typer.Option(help=f"One of {', '.join(TOKEN_ROLES)}.")] = "researcher",
                 expires: Annotated[str | None, typer.Option(help="Lifetime such as 30d, 12h or 2w "
                                                                  "(default: until revoked).")] = None,
                 orchestrator: Orchestrator = DEFAULT) -> None:
    """Create a token and print it once (the orchestrator keeps only its hash): give it to its holder, who
    puts it in their client configuration (`token:`) or in DCNR_TOKEN."""
    seconds = parse_duration(expires) if expires else None
    with connect(orchestrator) as c:
        secret = c.create_token(name, role, seconds)
    print(secret)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


def token_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Tokens by name, with their role and expiry (never their secrets)."""
    with connect(orchestrator) as c:
        found = c.list_tokens()
    if as_json:
        out.print_json(json.dumps([t.__dict__ for t in found]))
        return
    table("tokens", ["name", "role", "created", "expires"],
          [[t.name, t.role, _when(t.created_at), _when(t.expires_at)] for t in found])


def token_revoke(name: Name, orchestrator: Orchestrator = DEFAULT) -> None:
    """Revoke a token: calls made with it are refused from now on."""
    with connect(orchestrator) as c:
        if not c.revoke_token(name):
            raise NotFound(f"no token named {name!r}")
    print(f"revoked token {name}")
