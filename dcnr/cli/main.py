"""`dcnr` entry point and the `network` commands."""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from rich.console import Console
from rich.table import Table

from dcnr.cli import exit_codes
from dcnr.errors import NetworkError
from dcnr.proto.status import PROBLEMS_KEY
from dcnr.spec.loader import load_network

app = typer.Typer(
    help="DCNR: train and run one shared neural network, cut into small VNodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
network_app = typer.Typer(help="Network definitions: check YAML files here (validate, analyze), or manage the "
                          "networks an orchestrator holds (create, list, show, update, export, delete).",
                          no_args_is_help=True)
app.add_typer(network_app, name="network")

# soft_wrap: a status line is one line however narrow the terminal (scripts grep it); tables still fit.
USER_STATUSES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                 grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE}
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"verbose": False}
F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn errors into one clear line and an exit code (tracebacks only with --verbose)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            code, detail = exc.code(), exc.details() or ""
            if _state["verbose"]:
                traceback.print_exc()
            if code == grpc.StatusCode.UNAVAILABLE:
                print(f"error: cannot reach the server ({detail}); is `dcnr orchestrator` running, and is "
                      "--orchestrator / DCNR_ORCHESTRATOR right?", file=sys.stderr)
                raise typer.Exit(exit_codes.RUNTIME_FAILURE) from None
            problems = any(k == PROBLEMS_KEY for k, _ in (exc.trailing_metadata() or ()))
            for line in detail.splitlines() or [code.name]:
                print(line if problems else f"error: {line}", file=sys.stderr)  # problems: as `validate` prints
            raise typer.Exit(exit_codes.USER_ERROR if code in USER_STATUSES else exit_codes.RUNTIME_FAILURE) from None
        except NetworkError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)  # verbatim: one problem, one line, never wrapped
            raise typer.Exit(exit_codes.USER_ERROR) from None
        except (ValueError, FileNotFoundError) as exc:
            if _state["verbose"]:
                traceback.print_exc()
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(exit_codes.USER_ERROR) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(exit_codes.INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if _state["verbose"]:
                traceback.print_exc()
            print(f"error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", file=sys.stderr)
            raise typer.Exit(exit_codes.RUNTIME_FAILURE) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@network_app.command("validate")
@guarded
def network_validate(file: Annotated[Path, typer.Argument(help="Network YAML file.")]) -> None:
    """Validate a network file: every problem is printed, one per line (exit 2 if any); warnings
    (keys set to no effect) go to stderr, one per line, and still exit 0."""
    spec = load_network(file)
    for line in spec.warnings:
        print(f"warning: {line}", file=sys.stderr)  # verbatim, like problems: one line each
    out.print(f"{file}: ok — network {spec.name!r}, {len(spec.nodes)} VNodes, "
              f"{spec.num_parameters():,} parameters", highlight=False)


def _shapes(shapes: tuple[Any, ...]) -> list[list[int] | None]:
    return [list(s) if s is not None else None for s in shapes]


@network_app.command("analyze")
@guarded
def network_analyze(
    file: Annotated[Path, typer.Argument(help="Network YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
) -> None:
    """Per node: type, input/output shapes (no batch axis) and parameter count, with totals."""
    spec = load_network(file)
    rows: list[dict[str, Any]] = []
    for nid, node in spec.nodes.items():
        tied = node.impl.tied()
        count = sum(math.prod(shape) for pname, shape in node.impl.param_shapes().items() if pname not in tied)
        rows.append({"id": nid, "type": node.type, "input_shapes": _shapes(node.input_shapes),
                     "output_shapes": _shapes(node.output_shapes), "parameters": count})
    total = sum(r["parameters"] for r in rows)
    if as_json:
        print(json.dumps({"name": spec.name, "vnodes": len(rows), "parameters": total, "nodes": rows}))
        return
    table = Table(title=f"{spec.name}: {len(rows)} VNodes, {total:,} parameters")
    for col, justify in (("id", "left"), ("type", "left"), ("inputs", "left"), ("outputs", "left"),
                         ("parameters", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def fmt(shapes: list[list[int] | None]) -> str:
        texts = ["?" if s is None else "[" + ",".join(map(str, s)) + "]" for s in shapes]
        if len(texts) > 1 and len(set(texts)) == 1:
            return f"{len(texts)} × {texts[0]}"
        return " ".join(texts)

    for r in rows:
        table.add_row(r["id"], r["type"], fmt(r["input_shapes"]), fmt(r["output_shapes"]), f"{r['parameters']:,}")
    table.add_section()
    table.add_row("total", "", "", "", f"{total:,}")
    out.print(table)


def _register_demo() -> None:
    from dcnr.cli.demo import demo
    from dcnr.cli.remote import register

    app.command("demo")(guarded(demo))
    register(app, network_app)


_register_demo()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(exit_codes.INTERRUPTED)


if __name__ == "__main__":
    main()
