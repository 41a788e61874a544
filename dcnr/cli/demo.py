"""`dcnr demo`: the main job, end to end on one machine.

Trains a byte-level BPE vocabulary and the tiny LM on text every Python install
has (the standard library's own sources) or on the user's files, shows a live
progress bar, reports the held-out loss and prints a generated sample.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dcnr.data import TokenDataset, read_corpus, stdlib_corpus, train_vocabulary
from dcnr.runtime.allocator import keep_freed_memory
from dcnr.runtime.executor import LocalExecutor
from dcnr.spec.loader import parse_network
from dcnr.spec.transformer import tiny_lm

console = Console(stderr=True, soft_wrap=True)


def demo(
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 800,
    seed: Annotated[int, typer.Option(min=0, help="Seed for initialisation, data order and sampling.")] = 0,
    corpus: Annotated[list[Path] | None, typer.Option(
        help="Train on these text files or folders instead of the standard library's sources (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per step.")] = 16,
    micro_batches: Annotated[int, typer.Option(min=1, help="Micro-batches per step (must divide the batch).")] = 2,
    corpus_mb: Annotated[float, typer.Option(min=0.1, help="Read at most this many MB of text.")] = 4.0,
    prompt: Annotated[str, typer.Option(help="Text to continue after training.")] = "def ",
    sample_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate.")] = 80,
    save: Annotated[Path | None, typer.Option(help="Write the trained checkpoint (safetensors) here.")] = None,
) -> None:
    """Train the tiny LM on Python's own source code (or --corpus) and print a sample."""
    keep_freed_memory()  # a training process: reuse freed memory instead of re-faulting it every step
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
    spec = parse_network(yaml.safe_dump(doc), source="tiny-lm")
    embed = spec.nodes["embedder"].impl.cfg
    vocab_size, seq_len = embed.vocab_size, embed.seq_len  # type: ignore[attr-defined]
    with console.status(f"training a {vocab_size}-token byte-level BPE vocabulary"):
        vocab = train_vocabulary(texts, vocab_size)
        data = TokenDataset.from_texts(texts, vocab)
    console.print(f"vocabulary: {vocab.get_vocab_size()} tokens; dataset: {len(data.tokens):,} tokens "
                  f"({time.perf_counter() - started:.1f}s)")
    ex = LocalExecutor(spec, seed=seed)
    console.print(f"network {spec.name!r}: {len(spec.nodes)} VNodes, {spec.num_parameters():,} parameters")

    columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn())
    first = last = float("nan")
    tokens_per_step = batch_size * seq_len
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=steps, loss="-", tps="-")
        t0 = time.perf_counter()
        for step in range(steps):
            x, y = data.batch(seed, step, batch_size, seq_len)
            loss = ex.train_step({"tokens": x, "targets": y}, micro_batches=micro_batches)["ce_loss"]
            first = loss if step == 0 else first
            last = loss
            tps = tokens_per_step * (step + 1) / (time.perf_counter() - t0)
            bar.update(task, advance=1, loss=f"{loss:.3f}", tps=f"{tps:,.0f}")
    held_out = [data.batch(seed, i, batch_size, seq_len, split="validation") for i in range(2)]
    val_loss = sum(
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), vy.reshape(-1)).item()
        for logits, vy in ((ex.forward({"tokens": vx}, outputs=["logits"])["logits"], vy) for vx, vy in held_out)
    ) / len(held_out)
    console.print(f"loss {first:.3f} -> {last:.3f}; held-out loss {val_loss:.3f}")
    if save is not None:
        ex.save(save)
        console.print(f"checkpoint written to {save}")
    prompt_ids = vocab.encode(prompt, add_special_tokens=False).ids or [vocab.token_to_id("<bos>") or 0]
    ids = ex.generate(prompt_ids, max_new_tokens=sample_tokens, temperature=0.8, top_k=40, seed=seed)
    console.print(f"sample ({time.perf_counter() - started:.0f}s total):", style="bold")
    print(vocab.decode(ids.tolist()))
