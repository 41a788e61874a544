"""`dcnr vocab`: byte-level BPE vocabularies — train (here, from files) and store, list, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, err, input_files, table


def vocab_train(ctx: typer.Context,
                name: Annotated[str, typer.Option(help="Vocabulary name.")],
                files: Annotated[list[Path], typer.Option(help="Text files or directories (several may follow).")],
                vocab_size: Annotated[int, typer.Option(help="Number of tokens.")] = 4096,
                orchestrator: Orchestrator = DEFAULT) -> None:
    """Train a byte-level BPE vocabulary on text files here and store it on the orchestrator."""
    paths = input_files(files, ctx.args)
    with connect(orchestrator) as c, err.status(f"training a {vocab_size}-token vocabulary on {len(paths)} files"):
        info = c.train_vocabulary(name, paths, vocab_size)
    print(info.name)


def vocab_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Vocabularies the orchestrator holds."""
    with connect(orchestrator) as c:
        rows = [{"name": v.name, "vocab_size": v.vocab_size} for v in c.list_vocabularies()]
    if as_json:
        print(json.dumps(rows))
        return
    table("vocabularies", ["name", "tokens"], [[r["name"], f"{r['vocab_size']:,}"] for r in rows])


def vocab_delete(name: Annotated[str, typer.Argument(help="Vocabulary name.")],
                 orchestrator: Orchestrator = DEFAULT) -> None:
    """Delete a vocabulary no dataset uses."""
    with connect(orchestrator) as c:
        c.delete_vocabulary(name)
    print(f"deleted {name}")
