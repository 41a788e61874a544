"""`dcnr demo`: the main job, end to end, on a local cluster.

Starts a local cluster (`dcnr.cluster.LocalCluster`: an orchestrator with SQLite in a
state directory and two PNode processes, on loopback), stores a byte-level BPE
vocabulary and a dataset made from text every Python install has (the standard
library's own sources) or the user's files, trains the tiny LM through a session with a live progress bar, reports the
held-out loss, streams a generated sample, and shuts everything down — also on
Ctrl-C — leaving no process behind.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dcnr.cluster import LocalCluster
from dcnr.errors import Aborted

console = Console(stderr=True, soft_wrap=True)
PNODES = 2
VALIDATION = "sample:0.05"  # validation stays on at a low rate: the other PNode re-executes 5 % of the work
HEARTBEAT = 5.0  # seconds between PNode heartbeats: generous, the demo shares the machine with its training
START_WAIT = 90.0  # seconds for the PNode processes to join


def demo(
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 600,
    seed: Annotated[int, typer.Option(min=0, help="Seed for initialisation, data order and sampling.")] = 0,
    corpus: Annotated[list[Path] | None, typer.Option(
        help="Train on these text files or folders instead of the standard library's sources (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per step.")] = 16,
    micro_batches: Annotated[int, typer.Option(min=1, help="Micro-batches per step, pipelined across PNodes.")] = 2,
    corpus_mb: Annotated[float, typer.Option(min=0.1, help="Read at most this many MB of text.")] = 4.0,
    prompt: Annotated[str, typer.Option(help="Text to continue after training.")] = "def ",
    sample_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate.")] = 80,
    save: Annotated[Path | None, typer.Option(help="Write the trained checkpoint (safetensors) here.")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="Keep the orchestrator's state here (default: a temporary directory, removed afterwards).")] = None,
) -> None:
    """Start a local cluster (orchestrator + 2 PNodes), train the tiny LM on Python's own source code
    (or --corpus) through a session, and stream a sample."""
    from dcnr.data import read_corpus, stdlib_corpus, train_vocabulary
    from dcnr.spec.transformer import tiny_lm

    if batch_size % micro_batches:
        raise ValueError(f"--batch-size {batch_size} must be a multiple of --micro-batches {micro_batches}")
    max_bytes = int(corpus_mb * 1_000_000)
    started = time.perf_counter()
    with console.status("reading corpus"):
        texts = read_corpus(corpus, max_bytes) if corpus else stdlib_corpus(max_bytes)
    source = ", ".join(map(str, corpus)) if corpus else "the Python standard library"
    console.print(f"corpus: {len(texts)} files, {sum(len(t) for t in texts) / 1e6:.1f} MB from {source}")

    doc = tiny_lm()
    doc["seed"] = seed
    for node in doc["nodes"]:  # the cosine schedule spans exactly this run
        cfg = node.get("config", {})
        if cfg.get("lr_schedule") == "cosine":
            cfg["decay_steps"] = max(1, steps - cfg.get("warmup_steps", 0))
    embed = next(n for n in doc["nodes"] if n["id"] == "embedder")["config"]
    with console.status(f"training a {embed['vocab_size']}-token byte-level BPE vocabulary"):
        vocab = train_vocabulary(texts, embed["vocab_size"])

    temp = state_dir is None
    root = Path(tempfile.mkdtemp(prefix="dcnr-demo-")) if state_dir is None else state_dir
    try:
        cluster = LocalCluster(root, PNODES, heartbeat_interval=HEARTBEAT, start_timeout=START_WAIT)
        try:
            with console.status(f"starting an orchestrator and {PNODES} PNodes"):
                c = cluster.start()
            console.print(f"cluster: orchestrator at {cluster.address}, {PNODES} PNodes (state in {root})")
            c.upload_vocabulary("demo-vocab", vocab.to_str())
            with console.status("uploading and tokenizing the dataset"):
                ds = c.create_dataset("demo-data", "demo-vocab", texts, validation_fraction=0.05)
            console.print(f"vocabulary: {vocab.get_vocab_size()} tokens; dataset: {ds.tokens:,} tokens "
                          f"({time.perf_counter() - started:.1f}s)")
            net = c.create_network(yaml.safe_dump(doc, sort_keys=False))
            console.print(f"network {net.name!r}: {net.vnodes} VNodes, {net.parameters:,} parameters")
            session = c.create_session(net.name, ds.name, steps, batch_size=batch_size, micro_batches=micro_batches,
                                       seed=seed, start=True, validation=VALIDATION)
            first = last = math.nan
            columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                       TimeElapsedColumn())
            with Progress(*columns, console=console) as bar:
                task = bar.add_task("train", total=steps, loss="-", tps="-")
                for ev in c.listen_session(session.id):
                    if ev.state == "failed":
                        raise Aborted(f"training failed: {ev.error}")
                    if ev.loss is None:
                        continue
                    first = ev.loss if math.isnan(first) else first
                    last = ev.loss
                    bar.update(task, completed=ev.step, loss=f"{ev.loss:.3f}", tps=f"{ev.tokens_per_second:,.0f}")
            costs = c.validate(net.name, ds.name, batches=2, batch_size=batch_size, seed=seed)
            console.print(f"loss {first:.3f} -> {last:.3f}; held-out loss {costs['ce_loss']:.3f}")
            verdicts = Counter(e.verdict for e in c.validation_events(session=session.id, limit=10_000))
            console.print(f"validation ({VALIDATION}): {sum(verdicts.values())} work units re-executed by the other "
                          f"PNode, {verdicts['pass']} matched bit for bit" + (
                              f", {sum(verdicts.values()) - verdicts['pass']} did not: see `dcnr validation list`"
                              if sum(verdicts.values()) != verdicts["pass"] else ""))
            if save is not None:
                c.export_network(net.name, save)
                console.print(f"checkpoint written to {save}")
            console.print("sample:", style="bold")
            sys.stdout.write(prompt)
            for chunk in c.chat(net.name, prompt, vocabulary="demo-vocab", max_new_tokens=sample_tokens,
                                temperature=0.8, top_k=40, seed=seed):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
        finally:
            with console.status("stopping the cluster"):
                cluster.close()
        console.print(f"done in {time.perf_counter() - started:.0f}s; every process stopped")
    finally:
        if temp:
            shutil.rmtree(root, ignore_errors=True)
