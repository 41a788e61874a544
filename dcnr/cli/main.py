"""The `dcnr` entry point: the command table, and how a failing command ends.

Every command is listed once in `COMMANDS` (its group, its name, the function in its
group's module); `build_app` turns the table into the `dcnr` command. No command
module imports this one, and importing a module registers nothing.

A command that fails prints one line and exits with the code of its error class
(`dcnr.errors`: 2 for a user error, 1 for a runtime failure, 130 for Ctrl-C); a
network definition's problems are printed one per line, verbatim. `--verbose` adds
the traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from dcnr.cli import (
    checkpoint,
    common,
    dataset,
    demo,
    network,
    pnode,
    relay,
    serve,
    serving,
    session,
    token,
    top,
    validation,
    vocab,
)
from dcnr.cli.common import err
from dcnr.errors import INTERRUPTED, RUNTIME_FAILURE, USER_ERROR, DcnrError, NetworkError
from dcnr.security.config import CONFIG_ENV

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Group:
    """A command group: `dcnr NAME ...`; `callback` runs when no sub-command is given."""

    name: str
    help: str
    callback: Callable[..., None] | None = None


@dataclass(frozen=True)
class Command:
    """`dcnr [GROUP] NAME`, run by `fn`; `extra_args`: it takes more values after its options
    (`--files a b c`)."""

    group: str | None
    name: str
    fn: Callable[..., None]
    extra_args: bool = False


GROUPS: tuple[Group, ...] = (
    Group("network", "Network definitions: check YAML files here (validate, analyze), or manage the networks an "
          "orchestrator holds (create, list, show, update, export, import, clone, delete)."),
    Group("session", "Training sessions: create, start, suspend, resume, follow, history."),
    Group("checkpoint", "Checkpoints of training sessions: list, export."),
    Group("vocab", "Byte-level BPE vocabularies."),
    Group("dataset", "Tokenized datasets with train/validation splits."),
    Group("pnode", "Run a PNode (no sub-command), or inspect the fleet and the standing of its PNodes (list, trust, "
          "release).", callback=serve.pnode),
    Group("relay", "Run a relay for PNodes behind NAT (no sub-command), or list the relays (list).",
          callback=relay.relay_run),
    Group("validation", "The validation log: checks of PNodes' work and their verdicts."),
    Group("token", "Tokens for operators and researchers (operators only): create, list, revoke."),
)

COMMANDS: tuple[Command, ...] = (
    Command("network", "validate", network.network_validate),
    Command("network", "analyze", network.network_analyze),
    Command("network", "create", network.network_create),
    Command("network", "update", network.network_update),
    Command("network", "delete", network.network_delete),
    Command("network", "list", network.network_list),
    Command("network", "show", network.network_show),
    Command("network", "export", network.network_export),
    Command("network", "import", network.network_import),
    Command("network", "clone", network.network_clone),
    Command("session", "create", session.session_create),
    Command("session", "start", session.session_start),
    Command("session", "suspend", session.session_suspend),
    Command("session", "resume", session.session_resume),
    Command("session", "list", session.session_list),
    Command("session", "listen", session.session_listen),
    Command("session", "history", session.session_history),
    Command("session", "delete", session.session_delete),
    Command("checkpoint", "list", checkpoint.checkpoint_list),
    Command("checkpoint", "export", checkpoint.checkpoint_export),
    Command("vocab", "train", vocab.vocab_train, extra_args=True),
    Command("vocab", "list", vocab.vocab_list),
    Command("vocab", "delete", vocab.vocab_delete),
    Command("dataset", "create", dataset.dataset_create, extra_args=True),
    Command("dataset", "split", dataset.dataset_split),
    Command("dataset", "explore", dataset.dataset_explore),
    Command("dataset", "list", dataset.dataset_list),
    Command("dataset", "delete", dataset.dataset_delete),
    Command("pnode", "list", pnode.pnode_list),
    Command("pnode", "trust", pnode.pnode_trust),
    Command("pnode", "release", pnode.pnode_release),
    Command("relay", "list", relay.relay_list),
    Command("validation", "list", validation.validation_list),
    Command("token", "create", token.token_create),
    Command("token", "list", token.token_list),
    Command("token", "revoke", token.token_revoke),
    Command(None, "orchestrator", serve.orchestrator),
    Command(None, "evaluate", serving.evaluate),
    Command(None, "chat", serving.chat),
    Command(None, "demo", demo.demo),
    Command(None, "top", top.top),
)

_state = {"verbose": False}


def _fail(message: str, code: int) -> typer.Exit:
    if _state["verbose"]:
        traceback.print_exc()
    for line in message.splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)
    return typer.Exit(code)


def guarded(fn: F) -> F:
    """Turn errors into one clear line and an exit code (tracebacks only with --verbose)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(INTERRUPTED) from None
        except NetworkError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)  # verbatim: one problem, one line, never wrapped
            raise typer.Exit(exc.exit_code) from None
        except DcnrError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        except (ValueError, FileNotFoundError) as exc:  # a bad value or path met outside our error classes
            raise _fail(str(exc), USER_ERROR) from None
        except Exception as exc:
            raise _fail(f"{type(exc).__name__}: {exc} (run with --verbose for the traceback)",
                        RUNTIME_FAILURE) from None

    return wrapper  # type: ignore[return-value]


def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
    config: Annotated[str | None, typer.Option(
        "--config", envvar=CONFIG_ENV, help="Client configuration: the orchestrator's address, its CA certificate "
        f"and a token (env {CONFIG_ENV}; default ~/.config/dcnr/config.yaml). `dcnr orchestrator` writes "
        "STATE_DIR/admin.yaml.")] = None,
) -> None:
    _state["verbose"] = verbose
    common.settings["config"] = config
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def build_app() -> typer.Typer:
    """The `dcnr` command, made from `GROUPS` and `COMMANDS`."""
    app = typer.Typer(help="DCNR: train and run one shared neural network, cut into small VNodes.",
                      no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(_root)
    groups: dict[str | None, typer.Typer] = {None: app}
    for g in GROUPS:
        runs = g.callback is not None
        sub = typer.Typer(help=g.help, no_args_is_help=not runs, invoke_without_command=runs)
        if g.callback is not None:
            sub.callback()(guarded(g.callback))
        app.add_typer(sub, name=g.name)
        groups[g.name] = sub
    for c in COMMANDS:
        settings = {"allow_extra_args": True, "ignore_unknown_options": False} if c.extra_args else None
        groups[c.group].command(c.name, context_settings=settings)(guarded(c.fn))
    return app


app = build_app()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(INTERRUPTED)


if __name__ == "__main__":
    main()
