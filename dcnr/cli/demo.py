"""`dcnr demo`: the main job, end to end, on a local cluster.

Starts an orchestrator (SQLite in a state directory) and two PNode processes on
loopback, stores a byte-level BPE vocabulary and a dataset made from text every
Python install has (the standard library's own sources) or the user's files,
trains the tiny LM through a session with a live progress bar, reports the
held-out loss, streams a generated sample, and shuts everything down — also on
Ctrl-C — leaving no process behind.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import grpc
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dcnr.cli.remote import save_blob
from dcnr.data import read_corpus, stdlib_corpus, train_vocabulary
from dcnr.orchestrator.app import Orchestrator
from dcnr.proto.v2 import orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.spec.transformer import tiny_lm

console = Console(stderr=True, soft_wrap=True)
PNODES = 2
START_WAIT = 90.0  # seconds for the PNode processes to join


class LocalCluster:
    """An orchestrator in this process and PNode child processes, all on loopback."""

    def __init__(self, state_dir: Path, pnodes: int = PNODES, threads: int = 1) -> None:
        self.state_dir = state_dir
        self.orch = Orchestrator(state_dir, heartbeat_interval=5.0)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.pnodes, self.threads = pnodes, threads
        self.channel: grpc.Channel | None = None
        self.address = ""

    def start(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        """Start everything and wait until the PNodes have joined; on failure, stop what started."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        port = self.orch.start("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        for i in range(self.pnodes):
            log = self.state_dir / f"pnode-{i}.log"
            self.logs.append(log)
            with log.open("wb") as f:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "dcnr.cli.main", "pnode", "--orchestrator", self.address,
                     "--id", f"demo-{i}", "--threads", str(self.threads), "--heartbeat-interval", "5"],
                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))  # Ctrl-C reaches us; we stop the children ourselves
        deadline = time.monotonic() + START_WAIT
        while len(self.orch.fleet.alive()) < self.pnodes:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                    raise RuntimeError(f"a PNode process exited with code {proc.returncode}: {tail[0]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"PNodes did not join within {START_WAIT:.0f} s (logs in {self.state_dir})")
            time.sleep(0.1)
        self.channel = grpc.insecure_channel(self.address, options=[
            ("grpc.max_send_message_length", 256 * 2**20), ("grpc.max_receive_message_length", 256 * 2**20)])
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    def close(self) -> None:
        """SIGTERM every PNode (they unregister), wait, kill stragglers; then stop the orchestrator."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.channel is not None:
            self.channel.close()
        self.orch.stop(grace=1.0)


def _upload(texts: list[str], name: str, vocab: str) -> Iterator[orchestrator_pb2.DatasetUpload]:
    yield orchestrator_pb2.DatasetUpload(name=name, vocabulary=vocab, validation_fraction=0.05)
    for t in texts:
        yield orchestrator_pb2.DatasetUpload(text=t, end_of_document=True)


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
        cluster = LocalCluster(root)
        with console.status(f"starting an orchestrator and {PNODES} PNodes"):
            c = cluster.start()
        try:
            console.print(f"cluster: orchestrator at {cluster.address}, {PNODES} PNodes (state in {root})")
            c.CreateVocabulary(orchestrator_pb2.CreateVocabularyRequest(name="demo-vocab",
                                                                        tokenizer_json=vocab.to_str()))
            with console.status("uploading and tokenizing the dataset"):
                ds = c.CreateDataset(_upload(texts, "demo-data", "demo-vocab"))
            console.print(f"vocabulary: {vocab.get_vocab_size()} tokens; dataset: {ds.tokens:,} tokens "
                          f"({time.perf_counter() - started:.1f}s)")
            net = c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=yaml.safe_dump(doc, sort_keys=False)))
            console.print(f"network {net.name!r}: {net.vnodes} VNodes, {net.parameters:,} parameters")
            session = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
                network=net.name, dataset=ds.name, steps=steps, batch_size=batch_size, micro_batches=micro_batches,
                seed=seed))
            c.StartTrainSession(orchestrator_pb2.SessionRef(id=session.id))
            first = last = math.nan
            columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                       TimeElapsedColumn())
            with Progress(*columns, console=console) as bar:
                task = bar.add_task("train", total=steps, loss="-", tps="-")
                for ev in c.ListenTrainSession(orchestrator_pb2.SessionRef(id=session.id)):
                    if ev.state == "failed":
                        raise RuntimeError(f"training failed: {ev.error}")
                    if math.isnan(ev.loss):
                        continue
                    first = ev.loss if math.isnan(first) else first
                    last = ev.loss
                    bar.update(task, completed=ev.step, loss=f"{ev.loss:.3f}", tps=f"{ev.tokens_per_second:,.0f}")
            val = c.ValidateNetwork(orchestrator_pb2.ValidateRequest(network=net.name, dataset=ds.name, batches=2,
                                                                     batch_size=batch_size, seed=seed))
            console.print(f"loss {first:.3f} -> {last:.3f}; held-out loss {val.costs['ce_loss']:.3f}")
            if save is not None:
                save_blob(c.ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name=net.name)), save)
                console.print(f"checkpoint written to {save}")
            console.print("sample:", style="bold")
            sys.stdout.write(prompt)
            for chunk in c.ChatNetwork(orchestrator_pb2.ChatRequest(
                    network=net.name, vocabulary="demo-vocab", prompt=prompt, max_new_tokens=sample_tokens,
                    temperature=0.8, top_k=40, seed=seed)):
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
