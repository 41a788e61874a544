"""Structure-aware fuzzing of every RPC of every DCNR service, as every role that can reach it.

What runs: an orchestrator and PNodes p0, p1, p2 in this process (`dcnr.cluster.LocalCluster`,
`in_process=True`), speaking gRPC over TLS on loopback. Before fuzzing, real state is made so that calls
reach deep code: a vocabulary `v`, a dataset `d`, the network `small` (a transformer LM placed on p0 and p1)
trained one step by a session whose checkpoints are stored, a second session that was never started, a
network `idle` that was never placed, a token `decoy`; p2 joins afterwards (hosting nothing) and is the
registered PNode whose certificate the fuzzer presents. Nobody heartbeats during the run (the interval is an
hour), so only the fuzzer's calls, and the repairs between RPCs (below), change state.

Endpoints, and the roles each is called as (every RPC is sent as every role of every endpoint that serves it,
in turn, one message each):

    public port           OrchestratorService, NodeManagementService   operator, researcher (tokens), anonymous
    peer port             NodeManagementService, StorageService         stranger (a certificate of this CA, never
                                                                        registered), registered (p2's certificate)
    p0's and p1's ports   VNodeService, PNodeService                    orchestrator (its certificate), peer (the
                                                                        other PNode's certificate)
    relay port            RelayService (attaching, with frames for      stranger, registered
                          the relay to deliver)

Messages: `proto_strategies` draws each RPC's request from its descriptor, seeded with the names, ids, digests,
tokens, tensors and valid requests of the state above (looked up again before each RPC). Hypothesis draws them
in chunks of `--chunk` per RPC, each chunk a `@given` run seeded from `--seed`, the RPC and the chunk's number:
the same seed draws the same choices (the seeded values are this run's own ids and tokens). When hypothesis
runs out of distinct messages (a request type without fields), the ones it drew are sent again to fill the
count. With `--workers N`, N processes draw the next chunks while one is sent (the same messages). A streamed
request is a list of 0 to 4 messages; a streamed answer is read up to `MAX_STREAM` messages, then cancelled.

Findings, each a failure (exit code 1):
- crash: an answer INTERNAL or UNKNOWN (`guarded` answers INTERNAL for any exception that is not one of
  `dcnr.errors`: a bug), or a server that stops answering Health (asked after every chunk);
- unreadable: an answer the client could not read (a status message past gRPC's metadata limit);
- hang: no answer within `--deadline` seconds. A stream that waits for events by design
  (`LONG_LIVED`: listening to a session that is not running) is cut after `--listen` seconds instead;
- state change: a rejected call (any status but OK) after which the state digest differs from the one
  before it. The digest covers the orchestrator's SQLite store (every table, rows in order), its object
  storage (keys, sizes and content hashes) and, for each PNode, its networks and their steps, its hosted
  VNodes and their parameter hashes. It is taken around every call (unchanged parts are cheap: SQLite's
  data_version, file stats), after each PNode's compute thread has drained what it was handed. An accepted
  call may change state: the digest after it (once a training session it started is suspended) is the next
  call's baseline.

Between RPCs the state the seeds name is put back if a call removed it (the decoy token, the vocabulary and
dataset, the networks, the two sessions, p2's registration, the placement and the fuzzer's runs on p0 and p1),
so that every RPC is fuzzed against live state; an RPC's own accepted calls may still change it for the rest
of that RPC.

Rate limit: the orchestrator allows each identity `rate_limit` calls per second (500 by default, bursts of
twice that; `Orchestrator(rate_limit=...)`). The fuzzer is to exercise the handlers, not the limiter, whatever
its pace (which grows with the machine and `--workers`), so the fuzzed orchestrator is given `--rate-limit`,
1e9 by default: no call is refused for its rate. A last pass (`--flood`) checks the default
limit holds: a second orchestrator, a `dcnr orchestrator` process with the default limit, is sent `--flood`
Health calls, `FLOOD_IN_FLIGHT` at a time, as one researcher; the calls admitted must stay within
burst + rate × time (the rest RESOURCE_EXHAUSTED), with no crash, hang or state change. (Whether the calls
came faster than the limit depends on the machine: the report says how many were refused.)

Run from the repository root (every RPC, 100000 messages each, takes hours; a few hundred take minutes):

    .venv/bin/python benchmarks/fuzz_rpc.py --count 300
    .venv/bin/python benchmarks/fuzz_rpc.py --count 2000 --rpc ValidateNetwork,ReceiveTrainRequest --seed 7
    .venv/bin/python benchmarks/fuzz_rpc.py --count 100 --roles anonymous,stranger --json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proto_strategies import Generator, Seeds, dcnr_overrides

from dcnr.cluster import LocalCluster
from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.app import DEFAULT_RATE_LIMIT, Orchestrator
from dcnr.pnode.limits import Expectations
from dcnr.proto.v2 import common_pb2, node_pb2, orchestrator_pb2, storage_pb2
from dcnr.proto.version import VERSION_TEXT
from dcnr.security import pki
from dcnr.security.pki import CertificateAuthority, Credentials
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.pnode import GrpcPNodeClient
from dcnr.transport.grpc.security import Identity, secure_channel
from dcnr.transport.messages import Membership, Placement, Run

FUZZ_RATE_LIMIT = 1e9  # calls per second per identity on the fuzzed orchestrator: never the limit
DEADLINE = 10.0  # seconds a call may take before it counts as a hang
LISTEN = 1.0  # seconds a long-lived stream is listened to before it is cut
STEP_TIMEOUT = 5.0  # the orchestrator fails a step after this long (a stalled step is no hang)
MAX_STREAM = 8  # messages read from a streamed answer before it is cancelled
CHUNK = 250  # messages drawn per hypothesis run
FLOOD_IN_FLIGHT = 64  # calls of the flood awaiting their answer at once
WORKERS = max(0, min(4, (os.cpu_count() or 2) - 2))  # drawing processes: with 2 cores or fewer, none helps
LONG_LIVED = frozenset({"dcnr.v2.OrchestratorService/ListenTrainSession", "dcnr.v2.RelayService/Attach"})
CRASH_CODES = frozenset({"INTERNAL", "UNKNOWN"})
PROTOS = (orchestrator_pb2, node_pb2, storage_pb2)
ENDPOINT_SERVICES = {  # endpoint -> (services it serves, roles it is called as)
    "public": (("OrchestratorService", "NodeManagementService"), ("operator", "researcher", "anonymous")),
    "peer": (("NodeManagementService", "StorageService"), ("stranger", "registered")),
    "p0": (("VNodeService", "PNodeService"), ("orchestrator", "peer")),
    "p1": (("VNodeService", "PNodeService"), ("orchestrator", "peer")),
    "relay": (("RelayService",), ("stranger", "registered")),
}
TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times." for i in range(200)]
SEQ, VOCAB, DIM = 8, 300, 16

log = logging.getLogger("dcnr.fuzz")


def small_lm_yaml(name: str) -> str:
    doc = transformer_lm(name, blocks=1, heads=2, head_dim=8, dim=DIM, seq_len=SEQ, vocab_size=VOCAB, dropout=0.1)
    return yaml.safe_dump(doc, sort_keys=False)


def rpcs() -> list[MethodDescriptor]:
    """Every RPC of every service, in the order the protos define them."""
    return [m for proto in PROTOS for s in proto.DESCRIPTOR.services_by_name.values() for m in s.methods]


def full_name(method: MethodDescriptor) -> str:
    return f"{method.containing_service.full_name}/{method.name}"


def chunk_seed(seed: int, rpc: str, chunk: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{rpc}/{chunk}".encode()).digest()[:8], "big")


# -- the state digest ---------------------------------------------------------------------------------------------
def _tensor_hash(t: torch.Tensor) -> str:
    raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:16]


class StateDigest:
    """Digests of the state a rejected call must leave alone, by part: "sqlite", "storage" and one per PNode."""

    def __init__(self, state_dir: Path, pnodes: dict[str, Any]) -> None:
        """For the orchestrator keeping its state in `state_dir`, and the in-process `PNode`s by name."""
        self.db = sqlite3.connect(f"file:{state_dir / 'state.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self.storage = state_dir / "storage"
        self.pnodes = pnodes
        self._db: tuple[int, str] = (-1, "")
        self._files: dict[str, tuple[tuple[int, int, int], str]] = {}

    def close(self) -> None:
        self.db.close()

    def take(self) -> dict[str, str]:
        parts = {"sqlite": self._sqlite(), "storage": self._storage()}
        for name, pnode in self.pnodes.items():
            parts[name] = self._pnode(pnode)
        return parts

    def _sqlite(self) -> str:
        version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._db[0]:  # another connection committed since we last looked
            h = hashlib.sha256()
            tables = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            for table in tables:
                h.update(f"\0{table}\0".encode())
                for row in sorted(repr(r) for r in self.db.execute(f'SELECT * FROM "{table}"')):
                    h.update(row.encode())
            self._db = (version, h.hexdigest()[:16])
        return self._db[1]

    def _storage(self) -> str:
        files: list[tuple[str, os.stat_result]] = []
        folders = [str(self.storage)]
        while folders:
            try:
                with os.scandir(folders.pop()) as entries:
                    for e in entries:
                        if e.is_dir(follow_symlinks=False):
                            folders.append(e.path)
                        else:
                            with contextlib.suppress(FileNotFoundError):  # removed since it was listed
                                files.append((e.path, e.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
        h = hashlib.sha256()
        seen: dict[str, tuple[tuple[int, int, int], str]] = {}
        skip = len(str(self.storage)) + 1
        for path, st_ in sorted(files):
            key = (st_.st_size, st_.st_mtime_ns, st_.st_ino)
            cached = self._files.get(path)
            if cached is None or cached[0] != key:
                try:
                    with open(path, "rb") as f:
                        cached = (key, hashlib.sha256(f.read()).hexdigest())
                except FileNotFoundError:
                    continue
            seen[path] = cached
            h.update(f"{path[skip:]}\0{st_.st_size}\0{cached[1]}\n".encode())
        self._files = seen
        return h.hexdigest()[:16]

    @staticmethod
    def _pnode(pnode: Any) -> str:
        host = pnode.runtime.host
        h = hashlib.sha256()
        for net in host.networks():
            h.update(f"network {net} step {host.step(net)}\n".encode())
        for net, v in host.local():
            params = ",".join(f"{n}={_tensor_hash(v.params[n].master)}" for n in v.owned)
            h.update(f"vnode {net}/{v.id} {params}\n".encode())
        return h.hexdigest()[:16]


# -- the world the fuzzer calls -------------------------------------------------------------------------------------
@dataclass
class Target:
    endpoint: str
    role: str
    channel: grpc.Channel

    @property
    def name(self) -> str:
        return f"{self.endpoint}/{self.role}"


def _pnode_identity(ca: CertificateAuthority) -> tuple[str, Identity, bytes]:
    """A new PNode key with a certificate of `ca`: its id, its identity and its certificate request."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = pki.certificate_request(key)
    pid, cert = ca.issue_pnode(csr)
    return pid, Identity(Credentials(pki.key_pem(key), cert, ca.cert_pem)), csr


class World:
    """The cluster under fuzzing, the channels of every role, and the state the seeds name."""

    def __init__(self, state_dir: Path, rate_limit: float = FUZZ_RATE_LIMIT) -> None:
        self.state_dir = state_dir
        self.cluster = LocalCluster(state_dir, ["p0", "p1"], heartbeat_interval=3600.0, step_timeout=STEP_TIMEOUT,
                                    in_process=True, orchestrator_options={"rate_limit": rate_limit})
        self.channels: list[grpc.Channel] = []
        self.targets: list[Target] = []
        self.sessions: list[str] = []  # a session trained to completion, and one never started
        self.digest: StateDigest | None = None

    # -- start ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the cluster and make the state the fuzzer's seeds name (see the module docstring)."""
        client = self.cluster.start()
        orch = self.orch
        self.yaml = small_lm_yaml("small")
        client.upload_vocabulary("v", train_vocabulary(TEXTS, VOCAB).to_str())
        client.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
        client.create_network(self.yaml)
        client.create_network(small_lm_yaml("idle"))
        self._sessions()
        self.artifact = self._export("small")
        self.tokenizer_json = orch.data.tokenizer("v").to_str()
        self.cluster.start_pnode("p2")
        self.p0, self.p1, self.p2 = self.cluster.pnodes
        self.stranger_id, self.stranger, self.csr = _pnode_identity(orch.ca)
        self.operator = orch.tokens.create("fuzz-operator", "operator")
        self.researcher = orch.tokens.create("fuzz-researcher", "researcher")
        self._open_channels()
        self._place_and_begin()
        self.repair()
        self.digest = StateDigest(orch.state_dir, {"p0": self.p0, "p1": self.p1, "p2": self.p2})

    @property
    def orch(self) -> Orchestrator:
        orch: Orchestrator = self.cluster.orch
        return orch

    def _export(self, name: str) -> bytes:
        path = self.state_dir / f"{name}.dcnr"
        self.cluster.client.export_network(name, path)
        return path.read_bytes()

    def _open_channels(self) -> None:
        orch, ca = self.orch, self.orch.ca.cert_pem
        public, peer = f"127.0.0.1:{orch.port}", f"127.0.0.1:{orch.peer_port}"
        relay = f"127.0.0.1:{orch.relay_port}"
        as_orchestrator = orch.identity

        def channel(address: str, tls_name: str, identity: Identity | None = None, token: str = "") -> grpc.Channel:
            made = secure_channel(address, ca, tls_name, [("grpc.max_receive_message_length", -1),
                                                          ("grpc.max_send_message_length", -1)], identity, token)
            self.channels.append(made)
            return made

        made = {
            ("public", "operator"): channel(public, pki.ORCHESTRATOR_TLS_NAME, token=self.operator),
            ("public", "researcher"): channel(public, pki.ORCHESTRATOR_TLS_NAME, token=self.researcher),
            ("public", "anonymous"): channel(public, pki.ORCHESTRATOR_TLS_NAME),
            ("peer", "stranger"): channel(peer, pki.ORCHESTRATOR_TLS_NAME, self.stranger),
            ("peer", "registered"): channel(peer, pki.ORCHESTRATOR_TLS_NAME, self.p2.identity),
            ("p0", "orchestrator"): channel(self.p0.address, pki.PNODE_TLS_NAME, as_orchestrator),
            ("p0", "peer"): channel(self.p0.address, pki.PNODE_TLS_NAME, self.p1.identity),
            ("p1", "orchestrator"): channel(self.p1.address, pki.PNODE_TLS_NAME, as_orchestrator),
            ("p1", "peer"): channel(self.p1.address, pki.PNODE_TLS_NAME, self.p0.identity),
            ("relay", "stranger"): channel(relay, pki.RELAY_TLS_NAME, self.stranger),
            ("relay", "registered"): channel(relay, pki.RELAY_TLS_NAME, self.p2.identity),
        }
        self.targets = [Target(e, r, c) for (e, r), c in made.items()]

    def close(self) -> None:
        if self.digest is not None:
            self.digest.close()
        for ch in self.channels:
            ch.close()
        self.cluster.close()

    # -- keeping the seeded state alive -------------------------------------------------------------------------------
    def quiesce(self) -> None:
        """Let background work end: running sessions are suspended, PNodes' compute threads drained."""
        orch = self.orch
        for rec in orch.store.list_sessions():
            if rec.state == "running":
                with contextlib.suppress(Exception):
                    orch.sessions.suspend(rec.id, wait=60.0)
        self.drain()

    def drain(self) -> None:
        """Until no PNode has queued work: what a call handed a compute thread is done (and what it sent on)."""
        for _ in range(20):
            for p in (self.p0, self.p1, self.p2):
                p.runtime.call(lambda: None, timeout=60.0)
            if all(p.runtime.queued() == 0 for p in (self.p0, self.p1, self.p2)):
                return

    def repair(self) -> None:
        """Put back what the seeds name if a call removed or moved it; every step tolerates what it finds."""
        orch, client = self.orch, self.cluster.client
        self.quiesce()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("decoy token", lambda: any(t.name == "decoy" for t in orch.tokens.list())
             or orch.tokens.create("decoy", "researcher")),
            ("vocabulary", lambda: any(v["name"] == "v" for v in orch.data.list_vocabularies())
             or client.upload_vocabulary("v", self.tokenizer_json)),
            ("dataset", lambda: any(d["name"] == "d" for d in orch.data.list_datasets())
             or client.create_dataset("d", "v", TEXTS, validation_fraction=0.1)),
            ("network small", lambda: any(n.name == "small" for n in orch.store.list_networks())
             or client.create_network(self.yaml)),
            ("network idle", lambda: any(n.name == "idle" for n in orch.store.list_networks())
             or client.create_network(small_lm_yaml("idle"))),
            ("sessions", self._sessions),
            ("p2's registration", self._register_p2),
            ("placement and runs", self._place_and_begin),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # the fuzz goes on against what is left; the report says what failed
                log.warning("could not restore %s: %s: %s", what, type(exc).__name__, exc)
        self.quiesce()

    def _sessions(self) -> None:
        """A session of `small` trained to completion (one step, with checkpoints) and one never started."""
        orch, client = self.orch, self.cluster.client
        known = {r.id: r for r in orch.store.list_sessions()}
        trained, fresh = [*self.sessions, "", ""][:2]
        if trained not in known or known[trained].state != "completed":
            trained = client.create_session("small", "d", steps=1, batch_size=2).id
            client.start_session(trained)
            deadline = time.monotonic() + 120
            while (state := orch.store.get_session(trained).state) != "completed":
                if time.monotonic() > deadline or state == "failed":
                    raise RuntimeError(f"a set-up session did not complete: {orch.store.get_session(trained)}")
                time.sleep(0.05)
        if fresh not in known or known[fresh].state != "created":
            fresh = client.create_session("small", "d", steps=2, batch_size=2).id
        self.sessions = [trained, fresh]

    def _register_p2(self) -> None:
        fleet, p2 = self.orch.fleet, self.p2
        known = {p.id: p for p in self.orch.store.list_pnodes()}
        rec = known.get(p2.id)
        if rec is not None and rec.address == p2.address and rec.state == "alive":
            return
        fleet.unregister(p2.id)
        fleet.register(Membership(p2.id, p2.address, p2.hardware, VERSION_TEXT, "p2"))

    def _place_and_begin(self) -> None:
        """The current placement of `small` and the fuzzer's runs, told again to p0 and p1 as the orchestrator
        tells them (a fuzzed call may have dropped them)."""
        orch = self.orch
        net = orch.driver.network("small")
        dep = orch.driver.deploy(net, restoring=True)
        self.deployment, self.step = dep, net.step
        placement = Placement("small", net.yaml, net.spec.seed, dep.digest, dep.version, net.step, dep.assignments,
                              dep.addresses, orch.driver.vocabularies(net.spec))
        for pid in dep.pnodes():
            pnode = orch.fleet.client(pid)
            assert isinstance(pnode, GrpcPNodeClient)
            pnode.place_network(placement)
            pnode.reset_to_step("small", net.step)
            for run in self.runs():
                pnode.begin_run(run)

    def runs(self) -> list[Run]:
        dep = self.deployment
        return [Run("small", "fuzz-train", self.step, "train", 2, 1.0, (), dep.digest, dep.version),
                Run("small", "fuzz-eval", 12345, "eval", 1, 1.0, (), dep.digest, dep.version),
                Run("small", "fuzz-infer", 67890, "infer", 1, 1.0, (), dep.digest, dep.version)]

    # -- seeds ---------------------------------------------------------------------------------------------------------
    def seeds(self) -> Seeds:
        """Values the current state holds, and valid requests, for the generator (see `proto_strategies.Seeds`)."""
        orch = self.orch
        net = orch.driver.network("small")
        spec, router, dep = net.spec, net.router, self.deployment
        vnodes = sorted(spec.nodes)
        pnode_ids = [self.p0.id, self.p1.id, self.p2.id]
        blobs = [k.rpartition("/")[2] for k in orch.checkpoints.blobs.objects.list("blobs/")]
        fuzz_blob = b"a blob the fuzzer stores"
        fuzz_digest = hashlib.sha256(fuzz_blob).hexdigest()
        expires = time.time() + 3600  # tokens p2 could hold: it calls on the peer port with its certificate
        down = [orch.blob_access.signer.sign("get", b, self.p2.id, expires) for b in blobs[:4]]
        up = orch.blob_access.signer.sign("put", fuzz_digest, self.p2.id, expires)
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, VOCAB, (1, SEQ), generator=gen)
        activation = torch.randn(1, SEQ, DIM, generator=gen)
        tensors = [codec.encode_tensor(t) for t in (tokens, activation, torch.randn(2, SEQ, DIM, generator=gen),
                                                   torch.randn(1, SEQ, VOCAB, generator=gen), torch.tensor(1.5))]
        values = [common_pb2.Value(tensor=t) for t in tensors] + [common_pb2.Value(
            text=common_pb2.TextBatch(items=TEXTS[:2]))]
        version = codec.version_message()
        inputs = [orchestrator_pb2.NamedValue(name="tokens", value=values[0]),
                  orchestrator_pb2.NamedValue(name="targets", value=values[0])]
        runs = self.runs()
        requests: dict[str, list[Message]] = {}

        def add(*msgs: Message) -> None:
            for m in msgs:
                requests.setdefault(m.DESCRIPTOR.full_name, []).append(m)

        # valid requests of the step protocol: network inputs from the orchestrator, and the hops and gradients
        # that cross from one PNode to the other, each with a value of the shape its slot or edge takes
        expect = Expectations(spec)
        for b in spec.inputs:
            for run in ("fuzz-infer", "fuzz-train"):
                add(node_pb2.HopRequest(network="small", run=run, vnode=b.node_id, slot=b.slot_id, value=values[0]))
        for i, e in enumerate(spec.edges):
            if dep.assignments.get(e.src) != dep.assignments.get(e.dst):
                for run in ("fuzz-infer", "fuzz-train"):
                    add(node_pb2.HopRequest(network="small", run=run, vnode=e.dst, slot=e.dst_slot,
                                            value=example_value(expect.inputs[(e.dst, e.dst_slot)])))
                add(node_pb2.GradientHop(network="small", run="fuzz-train", vnode=e.src, edge=i, has_gradient=True,
                                         gradient=example_value(expect.gradients[i]).tensor))
        saved = self._saved()
        add(*saved)
        add(pb_placement(self, net), *[node_pb2.BeginRunRequest(version=version, run=run_pb(r)) for r in runs],
            node_pb2.ApplyUpdateRequest(network="small", step=self.step, loss_scale=1.0, apply=False),
            node_pb2.ResetToStepRequest(network="small", step=self.step),
            node_pb2.SaveRequest(network="small", vnode=vnodes[0]),
            orchestrator_pb2.ForwardRequest(network="small", inputs=inputs[:1]),
            orchestrator_pb2.TrainRequest(network="small", inputs=inputs, micro_batches=1),
            orchestrator_pb2.ValidateRequest(network="small", dataset="d", batches=1, batch_size=2),
            orchestrator_pb2.ChatRequest(network="small", prompt="the quick", vocabulary="v", max_new_tokens=2),
            orchestrator_pb2.CreateTrainSessionRequest(network="small", dataset="d", steps=1, batch_size=2),
            orchestrator_pb2.CreateVocabularyRequest(name="v2", tokenizer_json=self.tokenizer_json),
            orchestrator_pb2.CreateVocabularyRequest(name="v3", vocab_size=64, texts=TEXTS[:20]),
            orchestrator_pb2.DatasetUpload(name="d2", vocabulary="v", text=TEXTS[0], end_of_document=True),
            orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml("made"), source="made.yml"),
            orchestrator_pb2.UpdateNetworkRequest(name="idle", yaml=small_lm_yaml("idle")),
            orchestrator_pb2.CloneNetworkRequest(source="small", name="copy"),
            orchestrator_pb2.BlobChunk(data=self.artifact, name="imported"),
            orchestrator_pb2.ExportCheckpointRequest(session=self.sessions[0]),
            orchestrator_pb2.CreateTokenRequest(name="fresh", role="researcher", expires_in_seconds=60.0),
            orchestrator_pb2.SplitDatasetRequest(name="d", validation_fraction=0.2),
            node_pb2.CertificateRequest(csr=self.csr, version=version),
            node_pb2.RegisterPNodeRequest(id=self.p2.id, version=version, address=self.p2.address,
                                          hardware=codec.hardware_message(self.p2.hardware), name="p2"),
            node_pb2.HeartbeatRequest(id=self.p2.id, load=0.5),
            node_pb2.ProgressReport(version=version, pnode=self.p2.id, events=[node_pb2.ProgressEvent(
                kind=node_pb2.ProgressEvent.OUTPUT, network="small", run="fuzz-infer", vnode=vnodes[-1],
                value=values[4])]),
            storage_pb2.BlobUpload(digest=fuzz_digest, token=up, data=fuzz_blob),
            *[storage_pb2.BlobTargetRequest(digest=b, token=t) for b, t in zip(blobs, down, strict=False)],
            *[storage_pb2.BlobTargetRequest(digest=fuzz_digest, network="small", vnode=v)  # an upload p2 may make
              for v, host in sorted(dep.assignments.items()) if host == self.p2.id][:2])
        names = ["small", "idle", "v", "d", "decoy", ""]
        seeded: dict[str, list[Any]] = {
            "network": ["small", "idle"], "name": names, "source": ["small", "made.yml"], "dataset": ["d"],
            "vocabulary": ["v"], "session": self.sessions, "dcnr.v2.SessionRef.id": self.sessions,
            "dcnr.v2.PNodeRef.id": [self.p2.id, self.stranger_id], "dcnr.v2.RegisterPNodeRequest.id": [self.p2.id],
            "dcnr.v2.HeartbeatRequest.id": [self.p2.id, self.p0.id], "pnode": [*pnode_ids, self.stranger_id],
            "run": [r.id for r in runs], "fence_run": [r.id for r in runs], "vnode": vnodes,
            "digest": [dep.digest, fuzz_digest, *blobs], "token": [up, *down], "yaml": [net.yaml],
            "tokenizer_json": [self.tokenizer_json], "csr": [self.csr], "texts": TEXTS[:3], "items": TEXTS[:3],
            "prompt": ["the quick brown fox"], "version": [version], "tensor": tensors, "gradient": tensors[1:],
            "value": values, "address": [self.p0.address, self.p1.address, self.p2.address],
            "step": [self.step, self.step + 1], "placement_version": [dep.version], "micro_batch": [0, 1],
            "slot": [0, 1], "edge": list(range(len(router.edges))), "micro_batches": [1, 2],
            "kind": ["train", "eval", "infer"], "role": ["operator", "researcher"], "data": [self.artifact],
            "assignments": [dict(dep.assignments)], "addresses": [dict(dep.addresses)],
            "outputs": [[b.name for b in spec.outputs]], "seed": [spec.seed],
        }
        return Seeds(seeded, requests)

    def _saved(self) -> list[node_pb2.LoadRequest]:
        """A valid Load request for a VNode of each of p0 and p1: what Save returns, loaded back."""
        out = []
        for p in (self.p0, self.p1):
            hosted = [v for net, v in p.runtime.host.local("small") if v.owned]
            if not hosted:
                continue
            v = hosted[0]
            tensors, step = p.runtime.save("small", v.id)
            out.append(node_pb2.LoadRequest(network="small", vnode=v.id, step=step, tensors=[
                common_pb2.NamedTensor(name=k, tensor=codec.encode_tensor(t)) for k, t in sorted(tensors.items())]))
        return out


def example_value(expected: Any) -> common_pb2.Value:
    """A value that fits what a slot or edge carries (`dcnr.pnode.limits.Expectations`): a batch of one, every
    axis of the size the network fixes or bounds it to (1 where nothing does), random floats."""
    if expected.text:
        return common_pb2.Value(text=common_pb2.TextBatch(items=TEXTS[:1]))
    free, known = expected.free.dims, expected.known.dims  # aligned at their ends
    dims = [d if isinstance(d, int) else b if len(free) - i <= len(known) and isinstance(
        b := known[i - len(free)], int) else 1 for i, d in enumerate(free)]
    shape = [1, *dims] if expected.batch else dims
    return common_pb2.Value(tensor=codec.encode_tensor(torch.randn(shape, generator=torch.Generator().manual_seed(0))))


def run_pb(r: Run) -> common_pb2.Run:
    return common_pb2.Run(network=r.network, id=r.id, step=r.step, kind=r.kind, micro_batches=r.micro_batches,
                          grad_scale=r.grad_scale, outputs=list(r.outputs), digest=r.digest,
                          placement_version=r.placement_version)


def pb_placement(world: World, net: Any) -> node_pb2.PlaceNetworkRequest:
    dep = world.deployment
    return node_pb2.PlaceNetworkRequest(
        version=codec.version_message(), network="small", yaml=net.yaml, seed=net.spec.seed, digest=dep.digest,
        placement_version=dep.version, step=world.step, assignments=dep.assignments, addresses=dep.addresses,
        vocabularies=world.orch.driver.vocabularies(net.spec))


# -- calling --------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: str
    details: str
    seconds: float
    hang: bool = False

    @property
    def unreadable(self) -> bool:
        """The client could not read the answer: its trailers (the status message) were over gRPC's limit."""
        return self.code == "RESOURCE_EXHAUSTED" and "metadata size exceeds" in self.details


def call(channel: grpc.Channel, method: MethodDescriptor, request: Sequence[bytes], deadline: float,
         listen: float) -> Outcome:
    """Send one request (a list of messages for a streamed request); its status. A streamed answer is read up to
    `MAX_STREAM` messages; a long-lived one is cut after `listen` seconds (both count as OK)."""
    path = f"/{full_name(method)}"
    started = time.perf_counter()
    try:
        long_lived = full_name(method) in LONG_LIVED
        if method.client_streaming and not method.server_streaming:
            channel.stream_unary(path)(iter(request), timeout=deadline)
        elif method.server_streaming:
            stream = (channel.stream_stream(path)(iter(request), timeout=listen if long_lived else deadline)
                      if method.client_streaming else
                      channel.unary_stream(path)(request[0], timeout=listen if long_lived else deadline))
            try:
                for i, _ in enumerate(stream):
                    if i + 1 >= MAX_STREAM:
                        stream.cancel()
                        break
            except grpc.RpcError as exc:
                if not (long_lived and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
        else:
            channel.unary_unary(path)(request[0], timeout=deadline)
    except grpc.RpcError as exc:
        seconds = time.perf_counter() - started
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = (exc.details() or "") if isinstance(exc, grpc.Call) else str(exc)
        return Outcome(code, details, seconds, hang=code == "DEADLINE_EXCEEDED" and seconds >= deadline * 0.99)
    return Outcome("OK", "", time.perf_counter() - started)


def health(world: World) -> list[str]:
    """Servers that do not answer Health (their names)."""
    down = []
    request = common_pb2.HealthRequest().SerializeToString()
    checks = [("orchestrator (public port)", "public", "anonymous", "dcnr.v2.OrchestratorService/Health"),
              ("orchestrator (peer port)", "peer", "registered", "dcnr.v2.NodeManagementService/RegisterPNode"),
              ("p0", "p0", "orchestrator", "dcnr.v2.VNodeService/Health"),
              ("p1", "p1", "orchestrator", "dcnr.v2.VNodeService/Health")]
    by = {(t.endpoint, t.role): t.channel for t in world.targets}
    for what, endpoint, role, path in checks:
        try:
            if path.endswith("Health"):
                by[(endpoint, role)].unary_unary(f"/{path}")(request, timeout=DEADLINE)
            else:  # the peer port has no Health: an empty registration must be answered (refused), not time out
                by[(endpoint, role)].unary_unary(f"/{path}")(b"", timeout=DEADLINE)
        except grpc.RpcError as exc:
            if not isinstance(exc, grpc.Call) or exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                                                grpc.StatusCode.DEADLINE_EXCEEDED):
                down.append(what)
    return down


# -- drawing ----------------------------------------------------------------------------------------------------------
def request_strategy(method: MethodDescriptor, generator: Generator) -> SearchStrategy[list[bytes]]:
    """A request of the RPC as serialized messages: one, or 0 to 4 for a streamed request."""
    one = generator.message(method.input_type)
    if method.client_streaming:
        return st.lists(one, max_size=4).map(lambda ms: [m.SerializeToString() for m in ms])
    return one.map(lambda m: [m.SerializeToString()])


def draw(strategy: SearchStrategy[list[bytes]], count: int, seed: int) -> list[list[bytes]]:
    """`count` requests drawn by one hypothesis run with `seed` (those it drew, repeated, if it ran out)."""
    drawn: list[list[bytes]] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate], verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), derandomize=False)
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(request: list[bytes]) -> None:
        drawn.append(request)

    collect()
    return list(itertools.islice(itertools.cycle(drawn), count)) if drawn else []


def draw_chunk(rpc: str, seeds: Seeds, count: int, seed: int) -> list[list[bytes]]:
    """One chunk of an RPC's requests (`draw` with a generator of `seeds`), in a drawing process or here."""
    method = next(m for m in rpcs() if full_name(m) == rpc)
    return draw(request_strategy(method, Generator(seeds, dcnr_overrides())), count, seed)


class Drawer:
    """Chunks of requests drawn ahead of the sender by `workers` processes (hypothesis spends about as much
    CPU on a message as the servers do on answering it: on other cores the two overlap), or here with 0
    workers. The chunks are the same either way."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers
                     else None)

    def chunks(self, rpc: str, seeds: Seeds,
               plan: Sequence[tuple[int, int]]) -> Iterator[tuple[int, list[list[bytes]]]]:
        """(seed, requests) of each (count, seed) in `plan`, in order; up to `workers` + 1 drawn ahead."""
        if self.pool is None:
            for count, seed in plan:
                yield seed, draw_chunk(rpc, seeds, count, seed)
            return
        ahead: deque[tuple[int, Future[list[list[bytes]]]]] = deque()
        todo = iter(plan)
        for count, seed in itertools.islice(todo, self.workers + 1):
            ahead.append((seed, self.pool.submit(draw_chunk, rpc, seeds, count, seed)))
        while ahead:
            seed, drawn = ahead.popleft()
            following = next(todo, None)
            if following is not None:
                ahead.append((following[1], self.pool.submit(draw_chunk, rpc, seeds, *following)))
            yield seed, drawn.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# -- fuzzing ----------------------------------------------------------------------------------------------------------
@dataclass
class Finding:
    kind: str  # crash | unreadable | hang | state | down
    rpc: str
    target: str
    code: str
    details: str
    chunk_seed: int
    index: int
    request_sha256: str
    request_bytes: int
    changed: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f"{self.rpc} as {self.target}"
        what = f"{self.code} {self.details[:160]!r}" if self.kind != "state" else f"{self.code}, changed {self.changed}"
        return (f"{self.kind}: {where}: {what} (chunk seed {self.chunk_seed}, message {self.index}, "
                f"{self.request_bytes} bytes, sha256 {self.request_sha256[:16]})")


@dataclass
class RpcReport:
    rpc: str
    targets: list[str]
    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # status -> the details of its first answer
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    spent: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("drawing", "calling", "checking"), 0.0))

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


def targets_of(world: World, method: MethodDescriptor, roles: set[str] | None) -> list[Target]:
    service = method.containing_service.name
    return [t for t in world.targets if service in ENDPOINT_SERVICES[t.endpoint][0]
            and (roles is None or t.role in roles or t.name in roles)]


class Fuzzer:
    def __init__(self, world: World, seed: int, count: int, chunk: int = CHUNK, deadline: float = DEADLINE,
                 listen: float = LISTEN, workers: int = 0,
                 on_finding: Callable[[Finding], None] | None = None) -> None:
        self.world, self.seed, self.count, self.chunk = world, seed, count, chunk
        self.deadline, self.listen = deadline, listen
        self.drawer = Drawer(workers)
        self.on_finding = on_finding or (lambda f: None)
        self.saved: dict[str, bytes] = {}  # request sha256 -> its bytes, for findings

    def close(self) -> None:
        self.drawer.close()

    def fuzz(self, method: MethodDescriptor, roles: set[str] | None = None) -> RpcReport:
        """`count` messages to one RPC, as each of its targets in turn; findings as the module docstring says."""
        world = self.world
        rpc = full_name(method)
        targets = targets_of(world, method, roles)
        report = RpcReport(rpc, [t.name for t in targets])
        if not targets:
            return report
        world.repair()
        assert world.digest is not None
        before = world.digest.take()
        started = time.perf_counter()
        turn = itertools.cycle(targets)
        plan = [(min(self.chunk, self.count - start), chunk_seed(self.seed, rpc, i))
                for i, start in enumerate(range(0, self.count, self.chunk))]
        chunks = self.drawer.chunks(rpc, world.seeds(), plan)
        while True:
            t0 = time.perf_counter()
            seed, batch = next(chunks, (0, []))
            report.spent["drawing"] += time.perf_counter() - t0
            if not batch:
                break
            for index, request in enumerate(batch):
                target = next(turn)
                t0 = time.perf_counter()
                outcome = call(target.channel, method, request, self.deadline, self.listen)
                t1 = time.perf_counter()
                world.drain()
                if outcome.code == "OK":
                    world.quiesce()
                after = world.digest.take()
                report.spent["calling"] += t1 - t0
                report.spent["checking"] += time.perf_counter() - t1
                report.sent += 1
                report.codes[outcome.code] += 1
                report.samples.setdefault(outcome.code, outcome.details[:300])
                changed = sorted(k for k in after if after[k] != before.get(k))
                kinds = [kind for kind, found in (("crash", outcome.code in CRASH_CODES),
                                                  ("unreadable", outcome.unreadable), ("hang", outcome.hang),
                                                  ("state", outcome.code != "OK" and bool(changed))) if found]
                for kind in kinds:
                    raw = b"".join(request)
                    sha = hashlib.sha256(raw).hexdigest()
                    self.saved[sha] = raw
                    self._found(report, Finding(kind, rpc, target.name, outcome.code, outcome.details, seed, index,
                                                sha, len(raw), changed if kind == "state" else []))
                before = after
            down = health(world)
            if down:
                self._found(report, Finding("down", rpc, "", "UNAVAILABLE",
                                            f"no Health answer from {', '.join(down)}", seed, -1, "", 0))
                break
        report.seconds = time.perf_counter() - started
        return report

    def _found(self, report: RpcReport, finding: Finding) -> None:
        report.findings.append(finding)
        self.on_finding(finding)


# -- the rate limit, at its default -----------------------------------------------------------------------------
@dataclass
class FloodReport:
    sent: int
    admitted: int
    seconds: float
    allowed: float  # the most calls the limit may admit in that time
    codes: Counter[str]
    findings: list[str]

    @property
    def holds(self) -> bool:
        return self.admitted <= self.allowed and not self.findings


def flood(state_dir: Path, count: int, deadline: float = DEADLINE) -> FloodReport:
    """`count` Health calls (the cheapest, so that they come faster than the limit), `FLOOD_IN_FLIGHT` at a
    time, as one researcher, to an orchestrator with the default rate limit in a process of its own (so that
    the callers are not slowed by the servers' share of this process): admitted calls must stay within
    burst + rate × time, with no crash, hang or state change."""
    cluster = LocalCluster(state_dir, 0, heartbeat_interval=3600.0)
    channel: grpc.Channel | None = None
    try:
        client = cluster.start()
        token = client.create_token("flood", "researcher")
        ca = (state_dir / "state" / "tls" / "ca.crt").read_bytes()
        channel = secure_channel(cluster.address, ca, pki.ORCHESTRATOR_TLS_NAME, [], token=token)
        health = channel.unary_unary("/dcnr.v2.OrchestratorService/Health")
        request = common_pb2.HealthRequest().SerializeToString()
        digest = StateDigest(state_dir / "state", {})
        before = digest.take()
        codes: Counter[str] = Counter()
        findings: list[str] = []
        in_flight: deque[tuple[float, grpc.Future]] = deque()

        def settle(sent: float, future: grpc.Future) -> None:
            try:
                future.result()
                codes["OK"] += 1
            except grpc.RpcError as exc:
                code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
                codes[code] += 1
                hang = code == "DEADLINE_EXCEEDED" and time.perf_counter() - sent >= deadline * 0.99
                if code in CRASH_CODES or hang:
                    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                    findings.append(f"Health: {code} {(details or '')[:160]}")

        started = time.perf_counter()
        for _ in range(count):
            if len(in_flight) >= FLOOD_IN_FLIGHT:
                settle(*in_flight.popleft())
            in_flight.append((time.perf_counter(), health.future(request, timeout=deadline)))
        while in_flight:
            settle(*in_flight.popleft())
        seconds = time.perf_counter() - started
        after = digest.take()
        digest.close()
        if after != before:
            findings.append(f"state changed by Health calls: {sorted(k for k in after if after[k] != before[k])}")
        admitted = count - codes["RESOURCE_EXHAUSTED"]
        rate = DEFAULT_RATE_LIMIT  # `dcnr orchestrator`'s default too
        return FloodReport(count, admitted, seconds, 2 * rate + rate * seconds, codes, findings)
    finally:
        if channel is not None:
            channel.close()
        cluster.close()


# -- reporting ------------------------------------------------------------------------------------------------------
def table(reports: Sequence[RpcReport]) -> str:
    """One row per RPC: messages, throughput, findings by kind ("down": a server stopped answering Health)."""
    kinds = ("crash", "unreadable", "hang", "state", "down")
    rows: list[tuple[str, ...]] = [("RPC", "sent", "msg/s", *kinds, "statuses")]
    for r in reports:
        codes = " ".join(f"{c}:{n}" for c, n in r.codes.most_common())
        rows.append((r.rpc.replace("dcnr.v2.", ""), str(r.sent), f"{r.sent / r.seconds:.0f}" if r.seconds else "-",
                     *(str(r.count(k)) for k in kinds), codes))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(
        zip(row[:-1], widths, strict=True))), row[-1]]) for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100000, help="messages per RPC (default 100000)")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: drawn, and printed)")
    parser.add_argument("--rpc", default="", help="only RPCs whose full name contains one of these (comma-separated)")
    parser.add_argument("--roles", default="", help="only these roles (operator, researcher, anonymous, stranger, "
                        "registered, orchestrator, peer) or endpoint/role pairs such as p0/peer (comma-separated)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help=f"messages per hypothesis run (default {CHUNK})")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"processes drawing messages ahead of the sender; 0: draw here (default {WORKERS})")
    parser.add_argument("--deadline", type=float, default=DEADLINE, help="seconds before a call counts as a hang")
    parser.add_argument("--listen", type=float, default=LISTEN, help="seconds a long-lived stream is listened to")
    parser.add_argument("--rate-limit", type=float, default=FUZZ_RATE_LIMIT,
                        help=f"the fuzzed orchestrator's calls per second per identity (default {FUZZ_RATE_LIMIT:g})")
    parser.add_argument("--flood", type=int, default=4000,
                        help=f"calls of the pass at the default rate limit ({DEFAULT_RATE_LIMIT:g}/s); 0: skip it")
    parser.add_argument("--state-dir", type=Path, default=None, help="keep the cluster's state and logs here")
    parser.add_argument("--save", type=Path, default=None, help="write each finding's request bytes into this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.count < 1 or args.chunk < 1:
        parser.error("--count and --chunk must be at least 1")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    wanted = [w for w in args.rpc.split(",") if w]
    methods = [m for m in rpcs() if not wanted or any(w in full_name(m) for w in wanted)]
    roles = {r for r in args.roles.split(",") if r} or None

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    say(f"fuzz seed {seed} (rerun with --seed {seed}); {args.count} messages per RPC, {len(methods)} RPCs")
    with contextlib.ExitStack() as stack:
        state_dir = args.state_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dcnr-fuzz-")))
        world = World(state_dir, rate_limit=args.rate_limit)
        stack.callback(world.close)
        t0 = time.perf_counter()
        world.start()
        say(f"cluster ready in {time.perf_counter() - t0:.1f} s (state in {state_dir})")
        fuzzer = Fuzzer(world, seed, args.count, args.chunk, args.deadline, args.listen, args.workers,
                        on_finding=lambda f: say("  " + f.line()))
        stack.callback(fuzzer.close)
        reports = []
        started = time.perf_counter()
        for method in methods:
            say(f"{full_name(method)} ...")  # before: a server that aborts this process is named
            report = fuzzer.fuzz(method, roles)
            reports.append(report)
            if report.sent:
                say(f"{report.rpc}: {report.sent} sent in {report.seconds:.1f} s, "
                    f"{dict(report.codes.most_common(4))}")
            if any(f.kind == "down" for f in report.findings):
                say("a server stopped answering: stopping")
                break
        seconds = time.perf_counter() - started
        flooded = None
        if args.flood:
            flooded = flood(state_dir / "flood", args.flood, args.deadline)
            say(f"default rate limit: {flooded.admitted} of {flooded.sent} calls admitted in {flooded.seconds:.1f} s "
                f"(at most {flooded.allowed:.0f} allowed), {dict(flooded.codes)}")
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for sha, raw in fuzzer.saved.items():
            (args.save / f"{sha}.bin").write_bytes(raw)
    sent = sum(r.sent for r in reports)
    spent = {k: sum(r.spent[k] for r in reports) for k in ("drawing", "calling", "checking")}
    findings = [f for r in reports for f in r.findings]
    counts = Counter(f.kind for f in findings)
    ok = not findings and (flooded is None or flooded.holds)
    summary = (f"{'PASS' if ok else 'FAIL'}: {sent} messages to {sum(1 for r in reports if r.sent)} RPCs in "
               f"{seconds:.0f} s ({sent / seconds:.0f} msg/s), seed {seed}: {counts['crash']} crashes, "
               f"{counts['hang']} hangs, {counts['unreadable']} unreadable answers, "
               f"{counts['state']} state changes by rejected calls, "
               f"{counts['down']} servers down" + ("" if flooded is None else
                                                   f"; default rate limit {'holds' if flooded.holds else 'FAILED'}"))
    say(f"time: {spent['calling']:.1f} s calling, {spent['checking']:.1f} s checking state, "
        f"{spent['drawing']:.1f} s waiting for messages ({args.workers} drawing processes)")
    if args.json:
        print(json.dumps({
            "ok": ok, "seed": seed, "count": args.count, "sent": sent, "seconds": seconds, "spent": dict(spent),
            "messages_per_second": sent / seconds if seconds else 0.0,
            "rpcs": [{"rpc": r.rpc, "targets": r.targets, "sent": r.sent, "seconds": r.seconds,
                      "codes": dict(r.codes), "samples": r.samples, "crashes": r.count("crash"),
                      "hangs": r.count("hang"), "unreadable": r.count("unreadable"),
                      "state_changes": r.count("state"), "down": r.count("down")}
                     for r in reports],
            "findings": [vars(f) for f in findings],
            "flood": None if flooded is None else {
                "sent": flooded.sent, "admitted": flooded.admitted, "allowed": flooded.allowed,
                "seconds": flooded.seconds, "codes": dict(flooded.codes), "findings": flooded.findings,
                "holds": flooded.holds},
            "summary": summary}, indent=1))
    else:
        print(table(reports))
        print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
