"""Commands that talk to a running orchestrator: networks, sessions, vocabularies, datasets, chat, PNodes.

Every command takes `--orchestrator HOST:PORT` (or `DCNR_ORCHESTRATOR`); listings
print a table, or with `--json` one JSON document; server errors become one line.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dcnr.proto.v2 import orchestrator_pb2, orchestrator_pb2_grpc

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Orchestrator = Annotated[str, typer.Option("--orchestrator", envvar="DCNR_ORCHESTRATOR",
                                           help="Orchestrator address HOST:PORT (env DCNR_ORCHESTRATOR).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT = "127.0.0.1:50052"
TIMEOUT = 600.0
UPLOAD_PIECE = 1 << 20  # characters per dataset upload message


def control(address: str) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
    options = [("grpc.max_send_message_length", 256 * 2**20), ("grpc.max_receive_message_length", 256 * 2**20)]
    return orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(address, options=options))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(v) for v in r])
    out.print(table)


def save_blob(chunks: Iterable[orchestrator_pb2.BlobChunk], path: Path) -> None:
    """Write a streamed file under a temporary name, then rename: never half a file at `path`."""
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("wb") as f:
            for chunk in chunks:
                f.write(chunk.data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _files(files: list[Path], extra: list[str]) -> list[Path]:
    """`--files a b c`: the first after the option, the rest as extra arguments; directories are walked."""
    paths = [*files, *map(Path, extra)]
    if not paths:
        raise ValueError("no input files: pass --files FILE [FILE ...]")
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return found


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


# -- networks -------------------------------------------------------------------------------------

def network_create(file: Annotated[Path, typer.Argument(help="Network YAML file.")],
                   name: Annotated[str | None, typer.Option(help="Name (default: the YAML's name).")] = None,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Submit a network; prints its name."""
    info = control(orchestrator).CreateNetwork(orchestrator_pb2.CreateNetworkRequest(
        yaml=file.read_text(), name=name or "", source=str(file)), timeout=TIMEOUT)
    print(info.name)


def network_update(name: Annotated[str, typer.Argument(help="Network name.")],
                   file: Annotated[Path, typer.Argument(help="New YAML definition.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Replace a network's definition (its VNodes start again from initial parameters)."""
    info = control(orchestrator).UpdateNetwork(orchestrator_pb2.UpdateNetworkRequest(
        name=name, yaml=file.read_text(), source=str(file)), timeout=TIMEOUT)
    print(info.name)


def network_delete(name: Annotated[str, typer.Argument(help="Network name.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Delete a network and drop its VNodes from the PNodes."""
    control(orchestrator).DeleteNetwork(orchestrator_pb2.NetworkRef(name=name), timeout=TIMEOUT)
    print(f"deleted {name}")


def _network_row(n: orchestrator_pb2.NetworkInfo) -> dict[str, Any]:
    return {"name": n.name, "vnodes": n.vnodes, "parameters": n.parameters, "step": n.step,
            "created_at": n.created_at}


def network_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Networks the orchestrator holds."""
    rows = [_network_row(n) for n in control(orchestrator).ListNetworks(orchestrator_pb2.ListRequest(),
                                                                         timeout=TIMEOUT).networks]
    if as_json:
        print(json.dumps(rows))
        return
    _table("networks", ["name", "VNodes", "parameters", "step", "created"],
           [[r["name"], r["vnodes"], f"{r['parameters']:,}", r["step"], r["created_at"]] for r in rows])


def network_show(name: Annotated[str, typer.Argument(help="Network name.")], as_json: AsJson = False,
                 orchestrator: Orchestrator = DEFAULT) -> None:
    """A network's size, step and where each VNode runs."""
    reply = control(orchestrator).InspectNetwork(orchestrator_pb2.NetworkRef(name=name), timeout=TIMEOUT)
    doc = {**_network_row(reply.network),
           "placements": [{"vnode": p.vnode, "pnode": p.pnode, "address": p.address} for p in reply.placements]}
    if as_json:
        print(json.dumps(doc))
        return
    out.print(f"network {doc['name']}: {doc['vnodes']} VNodes, {doc['parameters']:,} parameters, step {doc['step']}")
    _table("placement", ["VNode", "PNode", "address"], [[p["vnode"], p["pnode"], p["address"]]
                                                        for p in doc["placements"]])


def network_export(name: Annotated[str, typer.Argument(help="Network name.")],
                   output: Annotated[Path, typer.Argument(help="Where to write the .safetensors file.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Download every parameter and optimizer state as one safetensors file."""
    save_blob(control(orchestrator).ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name=name),
                                                  timeout=TIMEOUT), output)
    print(output)


def network_import(file: Annotated[Path, typer.Argument(help="A .safetensors file written by `network export`.")],
                   name: Annotated[str | None, typer.Option(help="Name (default: the exported name).")] = None,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Create a network from an export: definition, parameters, optimizer state, step. Prints its name."""
    data = file.read_bytes()
    chunks = [orchestrator_pb2.BlobChunk(data=data[i:i + UPLOAD_PIECE]) for i in range(0, len(data), UPLOAD_PIECE)]
    chunks = chunks or [orchestrator_pb2.BlobChunk()]
    chunks[0].name = name or ""
    print(control(orchestrator).ImportNetwork(iter(chunks), timeout=TIMEOUT).name)


def network_clone(source: Annotated[str, typer.Argument(help="Network to copy.")],
                  name: Annotated[str, typer.Argument(help="Name of the copy.")],
                  orchestrator: Orchestrator = DEFAULT) -> None:
    """Copy a network with its current parameters and optimizer state. Prints the new name."""
    print(control(orchestrator).CloneNetwork(orchestrator_pb2.CloneNetworkRequest(source=source, name=name),
                                             timeout=TIMEOUT).name)


# -- sessions -------------------------------------------------------------------------------------

def _session_row(s: orchestrator_pb2.TrainSessionInfo) -> dict[str, Any]:
    return {"id": s.id, "network": s.network, "dataset": s.dataset, "state": s.state, "step": s.step,
            "steps": s.steps, "batch_size": s.batch_size, "micro_batches": s.micro_batches, "seed": s.seed,
            "error": s.error}


def session_create(network: Annotated[str, typer.Option(help="Network to train.")],
                   dataset: Annotated[str, typer.Option(help="Dataset to draw batches from.")],
                   steps: Annotated[int, typer.Option(help="Training steps.")],
                   batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 8,
                   micro_batches: Annotated[int, typer.Option(help="Micro-batches per step (pipelined).")] = 1,
                   seed: Annotated[int, typer.Option(help="Data-order seed.")] = 0,
                   checkpoint_every: Annotated[int, typer.Option(
                       help="Checkpoint every K steps (always: at start, on suspend, at the end).")] = 0,
                   start: Annotated[bool, typer.Option(help="Start it at once.")] = False,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Create a training session; prints its id."""
    if steps < 1 or batch_size < 1 or micro_batches < 1 or seed < 0 or checkpoint_every < 0:
        raise ValueError("--steps, --batch-size and --micro-batches must be positive, --seed and "
                         "--checkpoint-every non-negative")
    c = control(orchestrator)
    info = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network=network, dataset=dataset, steps=steps, batch_size=batch_size, micro_batches=micro_batches,
        seed=seed, checkpoint_every=checkpoint_every), timeout=TIMEOUT)
    if start:
        c.StartTrainSession(orchestrator_pb2.SessionRef(id=info.id), timeout=TIMEOUT)
    print(info.id)


def _session_call(rpc: str, session_id: str, orchestrator: str) -> None:
    info = getattr(control(orchestrator), rpc)(orchestrator_pb2.SessionRef(id=session_id), timeout=TIMEOUT)
    print(f"session {info.id}: {info.state} at step {info.step}/{info.steps}")


def session_start(session_id: Annotated[str, typer.Argument(help="Session id.")],
                  orchestrator: Orchestrator = DEFAULT) -> None:
    """Start a created session."""
    _session_call("StartTrainSession", session_id, orchestrator)


def session_suspend(session_id: Annotated[str, typer.Argument(help="Session id.")],
                    orchestrator: Orchestrator = DEFAULT) -> None:
    """Stop a running session after its current step."""
    _session_call("SuspendTrainSession", session_id, orchestrator)


def session_resume(session_id: Annotated[str, typer.Argument(help="Session id.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Continue a suspended session where it stopped."""
    _session_call("StartTrainSession", session_id, orchestrator)


def session_delete(session_id: Annotated[str, typer.Argument(help="Session id.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Stop and forget a session (the network keeps what it learned)."""
    control(orchestrator).DeleteTrainSession(orchestrator_pb2.SessionRef(id=session_id), timeout=TIMEOUT)
    print(f"deleted {session_id}")


def session_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Training sessions and their progress."""
    rows = [_session_row(s) for s in control(orchestrator).ListTrainSessions(orchestrator_pb2.ListRequest(),
                                                                             timeout=TIMEOUT).sessions]
    if as_json:
        print(json.dumps(rows))
        return
    _table("sessions", ["id", "network", "dataset", "state", "step", "batch", "error"],
           [[r["id"], r["network"], r["dataset"], r["state"], f"{r['step']}/{r['steps']}",
             f"{r['batch_size']}×{r['micro_batches']}", r["error"]] for r in rows])


def session_events(address: str, session_id: str) -> Iterator[orchestrator_pb2.StepEvent]:
    yield from control(address).ListenTrainSession(orchestrator_pb2.SessionRef(id=session_id))


def event_dict(ev: orchestrator_pb2.StepEvent) -> dict[str, Any]:
    return {"session": ev.session, "step": ev.step, "steps": ev.steps,
            "loss": None if math.isnan(ev.loss) else ev.loss, "tokens_per_second": ev.tokens_per_second,
            "learning_rates": dict(ev.learning_rates), "duration_seconds": ev.duration_seconds,
            "state": ev.state, "error": ev.error}


def session_listen(session_id: Annotated[str, typer.Argument(help="Session id.")],
                   as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event per line.")]
                   = False,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Follow a session's step events until it completes or fails."""
    last = None
    for ev in session_events(orchestrator, session_id):
        last = ev
        if as_json:
            print(json.dumps(event_dict(ev)), flush=True)
        elif ev.state in ("running", "completed") and not math.isnan(ev.loss):
            lrs = " ".join(f"{k}={v:.2e}" for k, v in sorted(ev.learning_rates.items()))
            print(f"step {ev.step}/{ev.steps} loss {ev.loss:.4f} {ev.tokens_per_second:,.0f} tok/s "
                  f"{ev.duration_seconds * 1000:.0f} ms {lrs}".rstrip(), flush=True)
        else:
            print(f"session {ev.session}: {ev.state} at step {ev.step}/{ev.steps}"
                  + (f": {ev.error}" if ev.error else ""), flush=True)
    if last is not None and last.state == "failed":
        raise RuntimeError(f"session {session_id} failed: {last.error}")


# -- checkpoints ------------------------------------------------------------------------------------

def checkpoint_list(session_id: Annotated[str, typer.Argument(help="Session id.")], as_json: AsJson = False,
                    orchestrator: Orchestrator = DEFAULT) -> None:
    """A session's checkpoints in storage, oldest first."""
    rows = [{"session": m.session, "network": m.network, "session_step": m.session_step, "step": m.step,
             "bytes": m.bytes, "created_at": datetime.fromtimestamp(m.created_at, UTC).isoformat(timespec="seconds")}
            for m in control(orchestrator).ListCheckpoints(orchestrator_pb2.SessionRef(id=session_id),
                                                           timeout=TIMEOUT).checkpoints]
    if as_json:
        print(json.dumps(rows))
        return
    _table(f"checkpoints of session {session_id}", ["session step", "network step", "size", "written"],
           [[r["session_step"], r["step"], f"{r['bytes'] / 2**20:.1f} MiB", r["created_at"]] for r in rows])


def checkpoint_export(session_id: Annotated[str, typer.Argument(help="Session id.")],
                      out_path: Annotated[Path, typer.Option("--out", help="Where to write the .safetensors file.")],
                      step: Annotated[int | None, typer.Option(help="Session step (default: the latest).")] = None,
                      orchestrator: Orchestrator = DEFAULT) -> None:
    """Write a checkpoint as one artifact: parameters keyed <node_id>.<param>, optimizer state, the network
    YAML, training config and dataset hash. `dcnr network import` and `LocalExecutor.from_artifact` read it."""
    request = orchestrator_pb2.ExportCheckpointRequest(session=session_id, session_step=step or 0,
                                                       has_step=step is not None)
    save_blob(control(orchestrator).ExportCheckpoint(request, timeout=TIMEOUT), out_path)
    print(out_path)


# -- vocabularies and datasets ----------------------------------------------------------------------

def vocab_train(ctx: typer.Context,
                name: Annotated[str, typer.Option(help="Vocabulary name.")],
                files: Annotated[list[Path], typer.Option(help="Text files or directories (several may follow).")],
                vocab_size: Annotated[int, typer.Option(help="Number of tokens.")] = 4096,
                orchestrator: Orchestrator = DEFAULT) -> None:
    """Train a byte-level BPE vocabulary on text files here and store it on the orchestrator."""
    from dcnr.data.vocab import train_vocabulary

    paths = _files(files, ctx.args)
    tok = train_vocabulary((_read(p) for p in paths), vocab_size)
    info = control(orchestrator).CreateVocabulary(orchestrator_pb2.CreateVocabularyRequest(
        name=name, tokenizer_json=tok.to_str()), timeout=TIMEOUT)
    print(info.name)


def vocab_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Vocabularies the orchestrator holds."""
    rows = [{"name": v.name, "vocab_size": v.vocab_size}
            for v in control(orchestrator).ListVocabularies(orchestrator_pb2.ListRequest(),
                                                            timeout=TIMEOUT).vocabularies]
    if as_json:
        print(json.dumps(rows))
        return
    _table("vocabularies", ["name", "tokens"], [[r["name"], f"{r['vocab_size']:,}"] for r in rows])


def vocab_delete(name: Annotated[str, typer.Argument(help="Vocabulary name.")],
                 orchestrator: Orchestrator = DEFAULT) -> None:
    """Delete a vocabulary no dataset uses."""
    control(orchestrator).DeleteVocabulary(orchestrator_pb2.NameRef(name=name), timeout=TIMEOUT)
    print(f"deleted {name}")


def _dataset_row(d: orchestrator_pb2.DatasetInfo) -> dict[str, Any]:
    return {"name": d.name, "vocabulary": d.vocabulary, "tokens": d.tokens, "train_tokens": d.train_tokens,
            "validation_tokens": d.validation_tokens, "sha256": d.sha256}


def upload_dataset(address: str, name: str, vocab: str, paths: list[Path], validation_fraction: float,
                   show_progress: bool = True) -> orchestrator_pb2.DatasetInfo:
    """Stream files to the orchestrator, which tokenizes them as they arrive (one file = one document)."""
    total = sum(p.stat().st_size for p in paths)
    progress = Progress(TextColumn("uploading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                        console=err, disable=not show_progress, transient=True)

    def messages() -> Iterator[orchestrator_pb2.DatasetUpload]:
        task = progress.add_task("upload", total=total)
        yield orchestrator_pb2.DatasetUpload(name=name, vocabulary=vocab, validation_fraction=validation_fraction)
        for p in paths:
            text = _read(p)
            pieces = [text[i:i + UPLOAD_PIECE] for i in range(0, len(text), UPLOAD_PIECE)] or [""]
            for i, piece in enumerate(pieces):
                yield orchestrator_pb2.DatasetUpload(text=piece, end_of_document=i == len(pieces) - 1)
            progress.advance(task, p.stat().st_size)

    with progress:
        info: orchestrator_pb2.DatasetInfo = control(address).CreateDataset(messages(), timeout=TIMEOUT)
    return info


def dataset_create(ctx: typer.Context,
                   name: Annotated[str, typer.Option(help="Dataset name.")],
                   vocab: Annotated[str, typer.Option(help="Vocabulary to tokenize with.")],
                   files: Annotated[list[Path], typer.Option(help="Text files or directories (several may follow).")],
                   validation_fraction: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.05,
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Upload text files; the orchestrator tokenizes them into a dataset. Prints its name."""
    info = upload_dataset(orchestrator, name, vocab, _files(files, ctx.args), validation_fraction)
    print(info.name)


def dataset_split(name: Annotated[str, typer.Argument(help="Dataset name.")],
                  validation_fraction: Annotated[float, typer.Option(help="Share held out for validation.")],
                  orchestrator: Orchestrator = DEFAULT) -> None:
    """Set how the dataset splits into train and validation."""
    d = control(orchestrator).SplitDataset(orchestrator_pb2.SplitDatasetRequest(
        name=name, validation_fraction=validation_fraction), timeout=TIMEOUT)
    print(f"{d.name}: {d.train_tokens:,} train / {d.validation_tokens:,} validation tokens")


def dataset_explore(name: Annotated[str, typer.Argument(help="Dataset name.")],
                    sample_tokens: Annotated[int, typer.Option(help="Tokens of the sample to decode.")] = 64,
                    as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Sizes and a decoded sample of a dataset."""
    r = control(orchestrator).ExploreDataset(orchestrator_pb2.ExploreDatasetRequest(
        name=name, sample_tokens=sample_tokens), timeout=TIMEOUT)
    doc = {**_dataset_row(r.info), "sample": r.sample}
    if as_json:
        print(json.dumps(doc))
        return
    out.print(f"dataset {doc['name']} (vocabulary {doc['vocabulary']}): {doc['tokens']:,} tokens — "
              f"{doc['train_tokens']:,} train, {doc['validation_tokens']:,} validation; sha256 {doc['sha256'][:16]}…",
              highlight=False)
    out.print("sample:", style="bold")
    out.print(r.sample, markup=False, highlight=False)


def dataset_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Datasets the orchestrator holds."""
    rows = [_dataset_row(d) for d in control(orchestrator).ListDatasets(orchestrator_pb2.ListRequest(),
                                                                         timeout=TIMEOUT).datasets]
    if as_json:
        print(json.dumps(rows))
        return
    _table("datasets", ["name", "vocabulary", "tokens", "train", "validation"],
           [[r["name"], r["vocabulary"], f"{r['tokens']:,}", f"{r['train_tokens']:,}",
             f"{r['validation_tokens']:,}"] for r in rows])


def dataset_delete(name: Annotated[str, typer.Argument(help="Dataset name.")],
                   orchestrator: Orchestrator = DEFAULT) -> None:
    """Delete a dataset."""
    control(orchestrator).DeleteDataset(orchestrator_pb2.NameRef(name=name), timeout=TIMEOUT)
    print(f"deleted {name}")


# -- using a network ------------------------------------------------------------------------------

def evaluate(network: Annotated[str, typer.Argument(help="Network name.")],
             dataset: Annotated[str, typer.Option(help="Dataset whose validation split to use.")],
             batches: Annotated[int, typer.Option(help="Held-out batches.")] = 4,
             batch_size: Annotated[int, typer.Option(help="Sequences per batch.")] = 8,
             seed: Annotated[int, typer.Option(help="Which held-out windows.")] = 0,
             as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Held-out loss of a network on a dataset's validation split."""
    r = control(orchestrator).ValidateNetwork(orchestrator_pb2.ValidateRequest(
        network=network, dataset=dataset, batches=batches, batch_size=batch_size, seed=seed), timeout=TIMEOUT)
    if as_json:
        print(json.dumps(dict(r.costs)))
        return
    for k, v in sorted(r.costs.items()):
        print(f"{k}: {v:.4f}")


def chat_stream(address: str, network: str, vocab: str, prompt: str, max_tokens: int, temperature: float,
                top_k: int, seed: int) -> Iterator[str]:
    for chunk in control(address).ChatNetwork(orchestrator_pb2.ChatRequest(
            network=network, vocabulary=vocab, prompt=prompt, max_new_tokens=max_tokens, temperature=temperature,
            top_k=top_k, seed=seed), timeout=TIMEOUT):
        if chunk.text:
            yield chunk.text


def chat(network: Annotated[str, typer.Argument(help="Network name.")],
         vocab: Annotated[str, typer.Option(help="Vocabulary (default: the one its last session trained with).")]
         = "",
         prompt: Annotated[str | None, typer.Option(help="One prompt, then exit (default: interactive).")] = None,
         max_tokens: Annotated[int, typer.Option(help="Tokens to generate per reply.")] = 64,
         temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.8,
         top_k: Annotated[int, typer.Option(help="Sample from the k likeliest tokens (0: all).")] = 40,
         seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
         orchestrator: Orchestrator = DEFAULT) -> None:
    """Generate text with a language-model network, streamed as it is produced."""
    def reply(text: str) -> None:
        for piece in chat_stream(orchestrator, network, vocab, text, max_tokens, temperature, top_k, seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    if prompt is not None:
        reply(prompt)
        return
    err.print("type a prompt and press Enter; Ctrl-D to quit", style="dim")
    while True:
        try:
            text = input("> ")
        except EOFError:
            return
        if text.strip():
            reply(text)


# -- the fleet ----------------------------------------------------------------------------------------

def pnode_list(as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """PNodes: state, hardware and hosted VNodes."""
    rows = []
    for p in control(orchestrator).ListPNodes(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).pnodes:
        hw = p.hardware
        rows.append({"id": p.id, "address": p.address, "state": p.state, "load": p.load,
                     "last_seen": datetime.fromtimestamp(p.last_seen, UTC).isoformat(timespec="seconds"),
                     "version": f"{p.version.major}.{p.version.minor}.{p.version.patch}",
                     "hardware": {"cpu_cores": hw.cpu_cores, "memory_bytes": hw.memory_bytes, "device": hw.device,
                                  "memory_budget_bytes": hw.memory_budget_bytes, "threads": hw.threads},
                     "vnodes": list(p.vnodes)})
    if as_json:
        print(json.dumps(rows))
        return

    def hosted(v: list[str]) -> str:
        return f"{len(v)}: " + ", ".join(v[:3]) + (" …" if len(v) > 3 else "") if v else "0"

    _table("pnodes", ["id", "address", "state", "hardware", "VNodes"], [
        [r["id"], r["address"], r["state"],
         f"{r['hardware']['device']}, {r['hardware']['cpu_cores']} cores, "
         f"{r['hardware']['memory_budget_bytes'] / 2**30:.1f}/{r['hardware']['memory_bytes'] / 2**30:.1f} GiB, "
         f"{r['hardware']['threads']} threads", hosted(r["vnodes"])] for r in rows])


def register(app: typer.Typer, network_app: typer.Typer) -> None:
    """Attach the commands to the `dcnr` app (wrapped by `guard`)."""
    from dcnr.cli.main import guarded
    from dcnr.cli.serve import orchestrator, pnode

    extra = {"allow_extra_args": True, "ignore_unknown_options": False}
    fn: Callable[..., None]
    commands: tuple[tuple[str, Callable[..., None]], ...] = (
        ("create", network_create), ("update", network_update), ("delete", network_delete),
        ("list", network_list), ("show", network_show), ("export", network_export), ("import", network_import),
        ("clone", network_clone))
    for name, fn in commands:
        network_app.command(name)(guarded(fn))
    session_app = typer.Typer(help="Training sessions: create, start, suspend, resume, follow.",
                              no_args_is_help=True)
    commands = (("create", session_create), ("start", session_start), ("suspend", session_suspend),
                ("resume", session_resume), ("list", session_list), ("listen", session_listen),
                ("delete", session_delete))
    for name, fn in commands:
        session_app.command(name)(guarded(fn))
    checkpoint_app = typer.Typer(help="Checkpoints of training sessions: list, export.", no_args_is_help=True)
    checkpoint_app.command("list")(guarded(checkpoint_list))
    checkpoint_app.command("export")(guarded(checkpoint_export))
    app.add_typer(checkpoint_app, name="checkpoint")
    vocab_app = typer.Typer(help="Byte-level BPE vocabularies.", no_args_is_help=True)
    vocab_app.command("train", context_settings=extra)(guarded(vocab_train))
    vocab_app.command("list")(guarded(vocab_list))
    vocab_app.command("delete")(guarded(vocab_delete))
    dataset_app = typer.Typer(help="Tokenized datasets with train/validation splits.", no_args_is_help=True)
    dataset_app.command("create", context_settings=extra)(guarded(dataset_create))
    dataset_app.command("split")(guarded(dataset_split))
    dataset_app.command("explore")(guarded(dataset_explore))
    dataset_app.command("list")(guarded(dataset_list))
    dataset_app.command("delete")(guarded(dataset_delete))
    pnode_app = typer.Typer(help="Run a PNode (no sub-command), or inspect the fleet.", invoke_without_command=True)
    pnode_app.callback()(guarded(pnode))
    pnode_app.command("list")(guarded(pnode_list))
    app.add_typer(session_app, name="session")
    app.add_typer(vocab_app, name="vocab")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(pnode_app, name="pnode")
    app.command("orchestrator")(guarded(orchestrator))
    app.command("evaluate")(guarded(evaluate))
    app.command("chat")(guarded(chat))
