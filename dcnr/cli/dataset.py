"""`dcnr dataset`: tokenized datasets on an orchestrator — create (upload files), split, explore,
list, delete."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, err, input_files, out, table

Name = Annotated[str, typer.Argument(help="Dataset name.")]


def dataset_create(ctx: typer.Context,
                   name: Annotated[str, typer.Option(help="Dataset name.")],
                   vocab: Annotated[str, typer.Option(help="Vocabulary to tokenize with.")],
                   files: Annotated[list[Path], typer.Option(help="Text files or directories (several may follow).")],
                   validation_fraction: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.05,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Upload text files (one file, one document); the orchestrator tokenizes them into a dataset as they
    arrive. Prints its name."""
    paths = input_files(files, ctx.args)
    with Progress(TextColumn("uploading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar, connect(orchestrator) as c:
        task = bar.add_task("upload", total=sum(p.stat().st_size for p in paths))
        info = c.create_dataset(name, vocab, paths, validation_fraction,
                                progress=lambda n: bar.advance(task, n))
    print(info.name)


def dataset_split(name: Name,
                  validation_fraction: Annotated[float, typer.Option(help="Share held out for validation.")],
                  orchestrator: Orchestrator = DEFAULT) -> None:
    """Set how the dataset splits into train and validation."""
    with connect(orchestrator) as c:
        d = c.split_dataset(name, validation_fraction)
    print(f"{d.name}: {d.train_tokens:,} train / {d.validation_tokens:,} validation tokens")


def dataset_explore(name: Name, sample_tokens: Annotated[int, typer.Option(help="Tokens of the sample to decode.")]
                    = 64, as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Sizes and a decoded sample of a dataset."""
    with connect(orchestrator) as c:
        found = c.explore_dataset(name, sample_tokens)
    doc = {**asdict(found.info), "sample": found.sample}
    if as_json:
        print(json.dumps(doc))
        return
    out.print(f"dataset {doc['name']} (vocabulary {doc['vocabulary']}): {doc['tokens']:,} tokens — "
              f"{doc['train_tokens']:,} train, {doc['validation_tokens']:,} validation; sha256 {doc['sha256'][:16]}…",
              highlight=False)
    out.print("sample:", style="bold")
    out.print(found.sample, markup=False, highlight=False)


def dataset_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Datasets the orchestrator holds."""
    with connect(orchestrator) as c:
        rows = [asdict(d) for d in c.list_datasets()]
    if as_json:
        print(json.dumps(rows))
        return
    table("datasets", ["name", "vocabulary", "tokens", "train", "validation"],
          [[r["name"], r["vocabulary"], f"{r['tokens']:,}", f"{r['train_tokens']:,}",
            f"{r['validation_tokens']:,}"] for r in rows])


def dataset_delete(name: Name, orchestrator: Orchestrator = DEFAULT) -> None:
    """Delete a dataset no running session reads."""
    with connect(orchestrator) as c:
        c.delete_dataset(name)
    print(f"deleted {name}")
