"""The PNode's work loop: runs, hops and the end of a step, for the VNodes hosted here.

Owns the order in which this PNode's VNodes compute, where their messages go (the
shared `Router` decides what to emit; a VNode placed here gets the message in-process,
any other through the `HopTransport` to the PNode the placement names), per-PNode
completion reports, and this PNode's copy of each network's step. It knows nothing of
gRPC: transports call the entry points below and hand it their implementations.

One compute thread runs every VNode of this PNode (torch's own threads parallelise each
op), so transport threads only check and enqueue. A hop for a run this PNode was not
told about, of a fenced (abandoned) run, or older than the network's current step is
refused or dropped; duplicates are dropped: late and repeated messages are harmless. A hop
from any PNode but the one the placement says hosts its sender is PERMISSION_DENIED.

Peers are strangers (SPEC §12): a placement, a run and every hop's value are checked
against `dcnr.pnode.limits` before anything is queued or allocated (InvalidArgument,
changing nothing), and what waits here is bounded: hops for the compute thread, hops to
send, runs remembered, requests a VNode holds unfinished. A hop that finds no room is
refused with ResourceExhausted, which its sender retries a few times, like an
unreachable peer (backpressure). A network never makes a PNode read a local file.

In a committed training run (SPEC §12, validation) the PNode records, per hosted VNode,
the digest of every hop it receives (with the sender's signature on it) and sends, signs
what it sends to other PNodes, and checks the signature of what it receives against the
sender's key in the placement (PERMISSION_DENIED otherwise). Hashing stays off the
compute thread: the transport threads hash what arrives, the outbox hashes and signs what
leaves, and a committer thread hashes colocated hops (a tensor sent on several edges
once). At the update it copies each VNode's state as the run found it (into buffers kept
from step to step) and commits to the digests (`apply_update` returns them); until the
next run begins it hands the state and the hops of any VNodes to the orchestrator as
evidence (`collect_evidence`). As a verifier it re-executes a work unit of another PNode
(`verify`) on its own thread, beside its training work.

Each training step's timing (when each hosted VNode computed, when hops left and arrived:
`dcnr.pnode.timing`) goes back with the update that ends the step (`update`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcnr.data.vocabularies import Vocabularies
from dcnr.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from dcnr.pnode.host import BudgetExceeded, VNodeHost
from dcnr.pnode.limits import (
    MAX_MICRO_BATCHES,
    MAX_NETWORK_TEXT,
    MAX_VNODES,
    MAX_VOCABULARIES,
    RUN_MEMORY,
    SEEN_MEMORY,
    Expectations,
    Limits,
    value_bytes,
)
from dcnr.pnode.timing import StepTimer
from dcnr.runtime.router import Router
from dcnr.runtime.vnode import RequestId
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import plan
from dcnr.transport.interfaces import HopTransport, OrchestratorLink
from dcnr.transport.messages import (
    RUN_KINDS,
    Commitment,
    Evidence,
    Hop,
    LocalVNode,
    Placement,
    Received,
    Replay,
    Report,
    Run,
    Updated,
    network_digest,
)
from dcnr.validation.digest import hop_key, hop_signed_by, load_public_key, state_digest, value_digest
from dcnr.validation.replay import replay

log = logging.getLogger("dcnr.pnode")

T = TypeVar("T")
Signer = Callable[[str, str, str, str], bytes]  # (network, run, hop key, digest) -> this PNode's signature
SEND_ATTEMPTS = 4  # a hop to an unreachable PNode is retried this often before the run fails
BUSY_ATTEMPTS = 8  # a hop refused for want of room: the peer is alive and drains, so it gets longer (~9 s)


@dataclass
class _Call:
    fn: Callable[[], Any]
    done: Future[Any] = field(default_factory=Future)


@dataclass
class _Ledger:
    """What this PNode commits to for one committed training run, and the evidence behind it."""

    run: str
    sent: dict[str, dict[str, str]] = field(default_factory=dict)  # VNode -> hop key -> digest
    received: dict[str, dict[str, Received]] = field(default_factory=dict)
    inputs: dict[str, list[Hop]] = field(default_factory=dict)  # VNode -> the hops it received
    outputs: dict[str, list[Hop]] = field(default_factory=dict)  # VNode -> the hops it sent
    before: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # state as the run found it
    committed: bool = False  # the update ran: `before` is complete
    digests: dict[tuple[Any, ...], str] = field(default_factory=dict)  # a tensor's identity -> its digest
    slot: int = 0  # which of the two evidence buffers of each VNode holds its `before`


@dataclass
class _Network:
    """One network as this PNode knows it."""

    placement: Placement
    spec: NetworkSpec
    router: Router
    expect: Expectations  # what each input slot and gradient edge carries
    mine: frozenset[str]  # VNodes placed here
    runs: OrderedDict[str, Run] = field(default_factory=OrderedDict)
    finished: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # (run, micro-batch) -> VNodes done
    ledger: _Ledger | None = None  # the committed training run of the current step
    previous: _Ledger | None = None  # the one before: its evidence is asked for while the current one runs
    keys: dict[str, Any] = field(default_factory=dict)  # PNode id -> its public key (loaded from the placement)


class PNodeRuntime:
    """Runs this PNode's VNodes and moves their messages.

    Entry points for transports (any thread): `place`, `begin_run`, `submit`, and the
    step-end and state operations, which run on the compute thread between two VNode
    computations.
    """

    def __init__(self, pnode_id: str, hops: HopTransport, link: OrchestratorLink | None = None,
                 device: str = "cpu", memory_budget: int | None = None, task_timeout: float = 300.0,
                 limits: Limits | None = None, signer: Signer | None = None) -> None:
        self.id = pnode_id
        self.signer = signer  # signs hops to other PNodes in committed runs (none: an unauthenticated fabric)
        self.hops = hops
        self.link = link
        self.host = VNodeHost(device, memory_budget=memory_budget)
        self.task_timeout = task_timeout
        self.limits = limits or Limits.for_budget(memory_budget)
        self.stats: dict[str, float] = {"hops_sent": 0, "tensor_bytes_sent": 0, "local_hops": 0, "refused": 0,
                                        "hops_received": 0, "tensor_bytes_received": 0, "busy_seconds": 0.0,
                                        "commit_seconds": 0.0, "verify_seconds": 0.0, "verified_units": 0}
        # busy: VNode compute; commit: digests, signatures, evidence; verify: re-executing others' units
        self._nets: dict[str, _Network] = {}
        self._lock = threading.Lock()  # guards _nets, _seen, _fenced and the queued counts
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._fenced: OrderedDict[str, None] = OrderedDict()
        self._started: dict[tuple[str, RequestId], float] = {}  # (network, request) -> its first hop here
        self._work: queue.Queue[Hop | _Call | None] = queue.Queue()  # hops admitted by `_enqueue` only
        self._queued = [0, 0]  # hops in _work, and the bytes of their values
        # (address, hop, attempts, what to commit it to: the ledger and the sending VNode, on its first attempt)
        self._outbox: queue.Queue[tuple[str, Hop, int, tuple[_Ledger, str] | None]] = queue.Queue(
            maxsize=self.limits.outbox_hops)
        # colocated hops and reported values to hash: (ledger, sending VNode, hop key, value, receiving VNode)
        self._hashing: queue.Queue[tuple[_Ledger, str, str, Any, str] | None] = queue.Queue()
        self._snapshots: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}  # evidence buffers, two per VNode
        self._events: queue.Queue[Report | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pnode-verify")
        self.timer = StepTimer()  # each training step's timing, reported with its update
        self.started_at = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (("compute", self._compute_loop), ("outbox", self._outbox_loop),
                             ("reporter", self._report_loop), ("committer", self._committer_loop)):
            t = threading.Thread(target=target, name=f"pnode-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()
        self._work.put(None)
        self._events.put(None)
        self._hashing.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self._verifier.shutdown(wait=False, cancel_futures=True)

    def queued(self) -> float:
        """Queued work per compute thread: what heartbeats report."""
        return float(self._work.qsize())

    def queues(self) -> dict[str, int]:
        """What waits now: hops and calls for the compute thread, hops to send, reports to send, values to hash,
        and requests begun here and not finished ("requests")."""
        return {"compute": self._work.qsize(), "outbox": self._outbox.qsize(), "reports": self._events.qsize(),
                "hashing": self._hashing.qsize(), "requests": len(self._started)}

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run `fn` on the compute thread (between two VNode computations) and return its result."""
        c = _Call(fn)
        self._work.put(c)
        result: T = c.done.result(timeout=timeout)
        return result

    # -- placement and runs (any thread) ----------------------------------------------------
    def place(self, placement: Placement) -> int:
        """Learn (or update) a network and where its VNodes live; VNodes no longer placed here are
        dropped. Returns how many VNodes are placed here. A placement refused changes nothing."""
        name = placement.network
        for what, count, most in (("characters of YAML", len(placement.yaml), MAX_NETWORK_TEXT),
                                  ("VNodes", len(placement.assignments), MAX_VNODES),
                                  ("PNode addresses", len(placement.addresses), MAX_VNODES),
                                  ("vocabularies", len(placement.vocabularies), MAX_VOCABULARIES)):
            if count > most:
                raise InvalidArgument(f"network {name!r}: the placement has {count} {what}, at most {most} allowed")
        if network_digest(placement.yaml) != placement.digest:
            raise InvalidArgument(f"network {name!r}: the definition does not match its digest")
        unknown = sorted(set(placement.assignments.values()) - set(placement.addresses))
        if unknown:
            raise InvalidArgument(f"network {name!r}: no address for PNode {unknown[0]!r}")
        try:
            keys = {pid: load_public_key(der) for pid, der in placement.keys.items()}
        except ValueError as exc:
            raise InvalidArgument(f"network {name!r}: a PNode key in the placement is not one: {exc}") from None
        mine = frozenset(v for v, p in placement.assignments.items() if p == self.id)

        def apply() -> int:
            with self._lock:
                old = self._nets.get(name)
            if old is not None and old.placement.digest == placement.digest:  # only the placement changed
                executed, spec = None, old.spec
            else:
                executed = plan(parse_stored_network(placement.yaml, name))  # SPEC §6 passes
                spec = executed.spec
            missing = sorted(set(spec.nodes) - set(placement.assignments))
            if missing:
                raise InvalidArgument(f"network {name!r}: VNode {missing[0]!r} is not placed")
            files = sorted(nid for nid, n in spec.nodes.items() if getattr(n.config, "vocab_path", None) is not None)
            if files:
                raise InvalidArgument(
                    f"network {name!r}: VNode {files[0]!r} names a vocabulary file (vocab_path), and a PNode never "
                    "reads a file a network names: store the vocabulary on the orchestrator and name it `vocabulary`")
            ledger = previous = None
            if executed is None:
                assert old is not None
                router, expect, runs, ledger = old.router, old.expect, old.runs, old.ledger
                previous = old.previous
            else:
                if old is not None:
                    self.host.remove_network(name)
                self._forget_snapshots(name)
                router, expect, runs = Router(spec), Expectations(spec), OrderedDict()
                # stored vocabularies of tokenizer nodes came with the placement; files are never read
                stored = Vocabularies(_vocabulary_lookup(dict(placement.vocabularies)), files=False)
                self.host.add_network(executed, placement.seed, stored)
                self.host.set_step(name, placement.step)
            for net, v in self.host.local(name):
                if v.id not in mine:
                    self.host.drop(net, v.id)
            self._forget_snapshots(name, keep=mine)
            with self._lock:
                self._nets[name] = _Network(placement, spec, router, expect, mine, runs, ledger=ledger,
                                            previous=previous, keys=keys)
            return len(mine)

        return self.call(apply)

    def _net(self, network: str) -> _Network:
        with self._lock:
            net = self._nets.get(network)
        if net is None:
            raise NotFound(f"network {network!r} is not placed on PNode {self.id}")
        return net

    def begin_run(self, run: Run) -> None:
        """Remember a run before its hops arrive (the oldest of `RUN_MEMORY` is forgotten); a run planned on
        another definition or placement, or on a step this PNode has moved past, is refused."""
        net = self._net(run.network)
        if run.kind not in RUN_KINDS:
            raise InvalidArgument(f"run kind must be one of {', '.join(RUN_KINDS)}, got {run.kind!r}")
        if not 1 <= run.micro_batches <= MAX_MICRO_BATCHES:
            raise InvalidArgument(f"a run has 1 to {MAX_MICRO_BATCHES} micro-batches, got {run.micro_batches}")
        unknown = sorted(set(run.outputs) - {b.name for b in net.spec.outputs})
        if unknown:
            raise InvalidArgument(f"network {run.network!r} has no output {unknown[0]!r}")
        if run.digest != net.placement.digest or run.placement_version != net.placement.version:
            raise Conflict(f"run {run.id} was planned on placement {run.placement_version} of network "
                           f"{run.network!r}; PNode {self.id} holds placement {net.placement.version}")
        if run.kind == "train" and run.step != self.host.step(run.network):
            raise Conflict(f"run {run.id} trains step {run.step} of network {run.network!r}; PNode {self.id} "
                           f"is at step {self.host.step(run.network)}")
        if run.kind == "train":
            self.timer.begin(run.network, run.id)
        with self._lock:
            net.runs[run.id] = run
            while len(net.runs) > RUN_MEMORY:
                net.runs.popitem(last=False)
            if run.kind == "train" and (net.ledger is None or net.ledger.run != run.id):
                # the evidence of the step before stays while this one runs (the orchestrator fetches it
                # meanwhile); the one before that goes. Committed ledgers alternate between two buffers
                kept = net.ledger if net.ledger is not None and net.ledger.committed else None
                net.previous = kept
                net.ledger = _Ledger(run.id, slot=1 - kept.slot if kept is not None else 0) if run.commit else None

    def submit(self, hop: Hop) -> bool:
        """Check and queue a hop from a peer (or the orchestrator); False when it is a duplicate.

        InvalidArgument when its value is not what the network expects there, ResourceExhausted
        when there is no room for it now (try again later); either way nothing changes."""
        net = self._check_mine(hop.network, hop.vnode)
        node = net.spec.nodes[hop.vnode]
        with self._lock:
            run = net.runs.get(hop.run)
            fenced = hop.run in self._fenced
        if fenced:
            return False
        if run is None:
            raise NotFound(f"run {hop.run!r} of network {hop.network!r} is unknown to PNode {self.id}")
        if not 0 <= hop.micro_batch < run.micro_batches:
            raise InvalidArgument(f"run {run.id} has {run.micro_batches} micro-batch(es), got {hop.micro_batch}")
        if hop.op == "fwd" and not 0 <= hop.index < node.impl.num_inputs:
            raise InvalidArgument(f"VNode {hop.vnode!r} has {node.impl.num_inputs} input slot(s), got slot {hop.index}")
        if hop.op == "bwd":
            if run.kind != "train":
                raise InvalidArgument(f"gradients belong to training runs, got a {run.kind} run")
            edges = net.router.edges
            if not 0 <= hop.index < len(edges) or edges[hop.index].src != hop.vnode:
                raise InvalidArgument(f"edge {hop.index} of network {hop.network!r} does not leave VNode "
                                      f"{hop.vnode!r}")
        self._check_sender(net, hop)
        net.expect.check(hop.op, hop.vnode, hop.index, hop.value, self.limits.max_hop_elements)
        if run.commit and run.kind == "train":
            self._check_signature(net, hop)
        key = (hop.network, hop.run, hop.micro_batch, hop.op, hop.vnode, hop.index)
        rid = RequestId(run.id, run.step, hop.micro_batch, run.kind)
        with self._lock:
            if key in self._seen:
                return False
            busy = self._no_room(hop, rid)
            if busy:
                self.stats["refused"] += 1
                raise ResourceExhausted(f"PNode {self.id} is busy: {busy}; send VNode {hop.vnode!r} of network "
                                        f"{hop.network!r} its hop again later")
            self._seen[key] = None
            if len(self._seen) > SEEN_MEMORY:
                self._seen.popitem(last=False)
            self._enqueue(hop)
        if hop.sender:  # from another PNode (the orchestrator's inputs are not hops between PNodes)
            size = value_bytes(hop.value)
            self.stats["hops_received"] += 1
            self.stats["tensor_bytes_received"] += size
            self.timer.received(hop, size)
        return True

    @staticmethod
    def _check_sender(net: _Network, hop: Hop) -> None:
        """A hop must come from the PNode that hosts the VNode at the other end of its edge in the run's
        placement; a network input from the orchestrator (sender "")."""
        if hop.op == "fwd":
            edge = net.router.feeds.get((hop.vnode, hop.index))
            peer = net.router.edges[edge].src if edge is not None else None
        else:
            peer = net.router.edges[hop.index].dst
        expected = net.placement.assignments.get(peer, "") if peer is not None else ""
        if hop.sender != expected:
            sender = f"PNode {hop.sender}" if hop.sender else "the orchestrator"
            raise PermissionDenied(f"{sender} may not send {hop.op} hops to {hop.vnode!r} slot/edge {hop.index} of "
                                   f"network {hop.network!r}: " + (f"{peer!r} is hosted by PNode {expected}"
                                                                   if peer else "it is a network input"))

    def _check_signature(self, net: _Network, hop: Hop) -> None:
        """Digest a hop of a committed run; one from a PNode must carry its signature on that digest when the
        placement gives PNode keys (PermissionDenied otherwise)."""
        started = time.perf_counter()
        try:
            hop.digest = value_digest(hop.value)
            if not hop.sender or not net.keys:
                return
            key = net.keys.get(hop.sender)
            name = hop_key(hop.micro_batch, hop.op, hop.vnode, hop.index)
            if key is None or not hop_signed_by(key, hop.network, hop.run, name, hop.digest, hop.signature):
                raise PermissionDenied(f"hop {name} of run {hop.run} is not signed by PNode {hop.sender}, which "
                                       "sent it")
        finally:
            self.stats["commit_seconds"] += time.perf_counter() - started

    def _no_room(self, hop: Hop, rid: RequestId) -> str:
        """Why a hop from a peer does not fit now ("" when it does); under the lock."""
        hops, size = self._queued
        room = self.limits
        if hops >= room.max_queued_hops or size + value_bytes(hop.value) > room.max_queued_bytes:
            return (f"{hops} hops ({size / 2**20:.1f} MiB) wait for its compute thread, at most "
                    f"{room.max_queued_hops} ({room.max_queued_bytes / 2**20:.1f} MiB)")
        vnode = self.host.hosted(hop.network, hop.vnode)
        if hop.op == "fwd" and vnode is not None and not vnode.holds(rid) and vnode.pending() >= room.pending_per_vnode:
            return f"VNode {hop.vnode!r} holds {vnode.pending()} unfinished requests, at most {room.pending_per_vnode}"
        return ""

    def _enqueue(self, hop: Hop) -> None:
        """Queue a hop for the compute thread, counted (under the lock)."""
        self._queued[0] += 1
        self._queued[1] += value_bytes(hop.value)
        self._work.put(hop)

    # -- compute thread -------------------------------------------------------------------
    def _compute_loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                item = self._work.get(timeout=1.0)
            except queue.Empty:
                item = None if self._stopping.is_set() else _Call(lambda: None)
            if item is None:
                return
            if isinstance(item, _Call):
                try:
                    item.done.set_result(item.fn())
                except BaseException as exc:  # handed to the caller
                    item.done.set_exception(exc)
            else:
                with self._lock:
                    self._queued[0] -= 1
                    self._queued[1] -= value_bytes(item.value)
                started, computed = time.perf_counter(), False
                try:
                    with torch.no_grad():
                        computed = self._deliver(item)
                except BudgetExceeded as exc:
                    self.stats["refused"] += 1
                    self._fail(item, str(exc))
                except Exception as exc:  # a bad value or a node error fails this run only
                    log.warning("VNode %s failed on run %s: %s", item.vnode, item.run, exc)
                    self._fail(item, f"VNode {item.vnode!r}: {exc}")
                ended = time.perf_counter()
                self.stats["busy_seconds"] += ended - started
                if computed:
                    self.timer.work(item.network, item.run, item.vnode, item.op, item.micro_batch, started, ended)
            if time.monotonic() - last_sweep > 1.0:
                self._expire()
                last_sweep = time.monotonic()

    def _deliver(self, hop: Hop) -> bool:
        """Run the hop's VNode on it and pass on what follows; whether it computed (False while it waits)."""
        with self._lock:
            net = self._nets.get(hop.network)
            run = net.runs.get(hop.run) if net is not None else None
            if net is None or run is None or hop.run in self._fenced or hop.vnode not in net.mine:
                return False  # the network was dropped, the run abandoned, or the VNode moved to another PNode
        if run.kind == "train" and run.step < self.host.step(hop.network):
            return False  # late: that step is over
        self._started.setdefault((hop.network, RequestId(run.id, run.step, hop.micro_batch, run.kind)),
                                 time.monotonic())
        vnode = self.host.vnode(hop.network, hop.vnode)
        ledger = net.ledger if run.commit and net.ledger is not None and net.ledger.run == run.id else None
        if ledger is not None:
            if hop.sender != self.id:  # from another PNode or the orchestrator: hashed on arrival (colocated: by
                ledger.received.setdefault(hop.vnode, {})[  # the committer, with the sender's record)
                    hop_key(hop.micro_batch, hop.op, hop.vnode, hop.index)] = Received(
                    hop.digest or value_digest(hop.value), hop.sender, hop.signature)
            ledger.inputs.setdefault(hop.vnode, []).append(hop)
        following = net.router.deliver(vnode, run, hop)
        for msg in following:
            if ledger is not None and (isinstance(msg, Hop) or msg.kind == "output"):
                self._commit_sent(ledger, net, hop.vnode, msg)
            if isinstance(msg, Report):
                self._on_report(net, run, msg)
            elif msg.vnode in net.mine:
                self.stats["local_hops"] += 1
                msg.sender = self.id
                with self._lock:  # counted, never refused: it follows from work already taken
                    self._enqueue(msg)  # colocated: the tensor itself, no serialization
            else:
                msg.sender = self.id
                address = net.placement.addresses[net.placement.assignments[msg.vnode]]
                try:  # a full outbox holds the compute thread back: peers then find this PNode busy
                    self._outbox.put((address, msg, 0, None if ledger is None else (ledger, hop.vnode)),
                                     timeout=self.task_timeout)
                except queue.Full:
                    self._fail(msg, f"PNode {self.id}: nothing could be sent for {self.task_timeout:g} s")
        return bool(following)

    def _commit_sent(self, ledger: _Ledger, net: _Network, vnode: str, msg: Hop | Report) -> None:
        """Note what `vnode` sends, to be hashed off the compute thread: a reported value or a colocated hop by
        the committer, a hop to another PNode by the outbox (`_seal`) just before it leaves."""
        if isinstance(msg, Report):
            self._hashing.put((ledger, vnode, hop_key(msg.micro_batch, "out", msg.vnode, msg.slot), msg.value, ""))
            return
        ledger.outputs.setdefault(vnode, []).append(msg)
        if msg.vnode in net.mine:
            self._hashing.put((ledger, vnode, hop_key(msg.micro_batch, msg.op, msg.vnode, msg.index), msg.value,
                               msg.vnode))

    def _digest(self, ledger: _Ledger, value: Any) -> str:
        """A value's digest, once per tensor per run (a value sent on several edges is the same tensor)."""
        started = time.perf_counter()
        key = ((value.data_ptr(), value.dtype, tuple(value.shape), value.stride(), value._version)
               if isinstance(value, torch.Tensor) else None)
        found = ledger.digests.get(key) if key is not None else None
        if found is None:
            found = value_digest(value)
            if key is not None:  # the tensor stays alive in the ledger's evidence: its address is not reused
                ledger.digests[key] = found
        self.stats["commit_seconds"] += time.perf_counter() - started
        return found

    def _committer_loop(self) -> None:
        while True:
            job = self._hashing.get()
            try:
                if job is None:
                    return
                ledger, vnode, key, value, receiver = job
                digest = self._digest(ledger, value)
                ledger.sent.setdefault(vnode, {})[key] = digest
                if receiver:
                    ledger.received.setdefault(receiver, {})[key] = Received(digest, self.id)
            except Exception:  # never dies: a hop it could not hash is missing from the commitment (a fault)
                log.exception("hashing a committed value failed")
            finally:
                self._hashing.task_done()

    def _seal(self, ledger: _Ledger, vnode: str, hop: Hop) -> None:
        """Hash and sign a hop of a committed run as it leaves for another PNode (outbox thread)."""
        key = hop_key(hop.micro_batch, hop.op, hop.vnode, hop.index)
        hop.digest = self._digest(ledger, hop.value)
        ledger.sent.setdefault(vnode, {})[key] = hop.digest
        if self.signer is not None:
            started = time.perf_counter()
            hop.signature = self.signer(hop.network, hop.run, key, hop.digest)
            self.stats["commit_seconds"] += time.perf_counter() - started

    def _on_report(self, net: _Network, run: Run, report: Report) -> None:
        if report.kind != "done":
            self._events.put(report)
            return
        key = (run.id, report.micro_batch)
        done = net.finished.setdefault(key, set())
        done.add(report.vnode)
        expected = net.mine & net.router.live & net.router.needed(run)
        if done >= expected:
            del net.finished[key]
            self._started.pop((run.network, RequestId(run.id, run.step, report.micro_batch, run.kind)), None)
            self._events.put(Report("done", run.network, run.id, report.micro_batch))

    def _fail(self, hop: Hop, error: str) -> None:
        self._events.put(Report("failed", hop.network, hop.run, hop.micro_batch, hop.vnode, error=error))

    def _expire(self) -> None:
        """Drop micro-batches that waited longer than the task timeout, and say so; drop at once what
        forgotten runs left behind (their hops are refused: it would wait for nothing)."""
        now = time.monotonic()
        with self._lock:
            stale = [(key, self._remembered(*key)) for key, t in self._started.items()
                     if now - t > self.task_timeout or not self._remembered(*key)]
            for net in self._nets.values():
                for key in [k for k in net.finished if k[0] not in net.runs]:
                    del net.finished[key]
        for (network, rid), remembered in stale:
            del self._started[(network, rid)]
            dropped = self.host.drop_request(network, rid)
            if dropped and remembered:
                self.stats["refused"] += 1
                self._events.put(Report("failed", network, rid.run, rid.micro_batch, dropped[0], error=(
                    f"PNode {self.id}: run {rid.run} micro-batch {rid.micro_batch} timed out after "
                    f"{self.task_timeout:g} s waiting for inputs or gradients at VNode(s) {', '.join(dropped[:4])}")))

    def _remembered(self, network: str, rid: RequestId) -> bool:
        """Whether the request's run is still known here (under the lock)."""
        net = self._nets.get(network)
        return net is not None and rid.run in net.runs

    # -- the end of a step, and state (run on the compute thread) ----------------------------
    def check_finite(self, network: str) -> bool:
        self._net(network)
        return self.call(lambda: all(v.grads_finite() for _, v in self.host.local(network)))

    def apply_update(self, network: str, step: int, loss_scale: float, apply: bool
                     ) -> tuple[dict[str, float], list[Commitment]]:
        """Apply (or skip) every hosted VNode's optimizer; the network moves to `step`. Returns the learning
        rates by VNode and, after a committed run, each hosted VNode's commitment."""
        learning_rates, commitments, _ = self.update(network, step, loss_scale, apply)
        return learning_rates, commitments

    def update(self, network: str, step: int, loss_scale: float, apply: bool) -> Updated:
        """`apply_update`, and when the step's work happened here (the run's timing; None if not recorded)."""
        net = self._net(network)

        def run() -> Updated:
            vnodes = [v for _, v in self.host.local(network)]
            ledger = net.ledger if net.ledger is not None and not net.ledger.committed else None
            norms = {}
            if ledger is not None:
                self._hashing.join()  # every colocated hop of the run is hashed
                started = time.perf_counter()
                ledger.before = {v.id: self._snapshot(network, v, ledger.slot) for v in vnodes}  # the state it found
                norms = {v.id: v.grad_norm() for v in vnodes}
                self.stats["commit_seconds"] += time.perf_counter() - started
            for v in vnodes:
                began = time.perf_counter()
                v.apply_update(loss_scale, apply)
                self.timer.updated(network, v.id, began, time.perf_counter())
            self.host.set_step(network, step)  # the step's training requests are over; others run on
            self._started = {k: t for k, t in self._started.items() if k[0] != network or k[1].kind != "train"}
            commitments = []
            started = time.perf_counter()
            if ledger is not None:
                ledger.committed = True
                commitments = [Commitment(v.id, state_digest(v.state(copy=False)), ledger.sent.get(v.id, {}),
                                          ledger.received.get(v.id, {}), norms[v.id]) for v in vnodes]
            self.stats["commit_seconds"] += time.perf_counter() - started
            return Updated({v.id: v.learning_rate() for v in vnodes if v.params}, commitments,
                           self.timer.finish(network))

        return self.call(run)

    def collect_evidence(self, network: str, run: str, vnodes: list[str]) -> Evidence:
        """The state as committed run `run` found them, and the hops they received and sent, of hosted VNodes;
        it is kept from the run's update until the training run after the next one begins (NotFound after)."""
        net = self._net(network)
        with self._lock:
            ledger = next((led for led in (net.ledger, net.previous) if led is not None and led.run == run), None)
        if ledger is None or not ledger.committed:
            raise NotFound(f"PNode {self.id} keeps no evidence of run {run!r} of network {network!r}")
        missing = sorted(set(vnodes) - set(ledger.before))
        if missing:
            raise NotFound(f"VNode {missing[0]!r} of network {network!r} had no part in run {run!r} on PNode {self.id}")
        return Evidence({v: {k: t.clone() for k, t in ledger.before[v].items()} for v in vnodes},  # buffers: reused
                        [h for v in vnodes for h in ledger.inputs.get(v, [])],
                        [h for v in vnodes for h in ledger.outputs.get(v, [])])

    def _snapshot(self, network: str, vnode: Any, slot: int) -> dict[str, torch.Tensor]:
        """A copy of a VNode's state in one of two buffers kept from step to step (no allocation once they
        exist): a step's evidence is written while the step before's may still be read."""
        kept = self._snapshots.setdefault((network, vnode.id, slot), {})
        for name, t in vnode.state(copy=False).items():
            buf = kept.get(name)
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
                kept[name] = t.clone()
            else:
                buf.copy_(t)
        return kept

    def verify(self, unit: Replay) -> dict[str, Commitment]:
        """Re-execute another PNode's work unit (on the verification thread, beside this PNode's own work)."""
        if len(unit.vnodes) > MAX_VNODES or len(unit.yaml) > MAX_NETWORK_TEXT:
            raise InvalidArgument("a work unit is too large to verify")
        def timed() -> dict[str, Commitment]:
            started = time.perf_counter()
            try:
                return replay(unit, self.host.device)
            finally:
                self.stats["verify_seconds"] += time.perf_counter() - started
                self.stats["verified_units"] += 1

        return self._verifier.submit(timed).result(timeout=self.task_timeout)

    def reset_to_step(self, network: str, step: int, fence_run: str = "", reinitialize: bool = False) -> None:
        """Drop unfinished work and gradients; the network is at `step` (a restore may move it back)."""
        with self._lock:
            if fence_run:
                self._fenced[fence_run] = None
                while len(self._fenced) > RUN_MEMORY:
                    self._fenced.popitem(last=False)
            net = self._nets.get(network)
            if net is not None:
                net.runs.clear()
                net.finished.clear()
                net.ledger = net.previous = None
            for key in [k for k in self._seen if k[0] == network]:  # the step will be sent again
                del self._seen[key]
        if net is None:
            return  # nothing placed here: nothing to reset

        def run() -> None:
            if reinitialize:  # built again from the seed when next used
                for _, v in self.host.local(network):
                    self.host.drop(network, v.id)
            for _, v in self.host.local(network):
                for name in v.owned:
                    v.params[name].zero_grad()
                v.abandon_step()
            self.host.set_step(network, step)
            self._started = {k: t for k, t in self._started.items() if k[0] != network}

        self.call(run)

    def save(self, network: str, vnode: str) -> tuple[dict[str, torch.Tensor], int]:
        """A snapshot of a hosted VNode's state (fp32 parameters it owns, optimizer state) and its step."""
        self._check_mine(network, vnode)

        def run() -> tuple[dict[str, torch.Tensor], int]:
            v = self.host.vnode(network, vnode)
            return v.state(), v.step

        return self.call(run)

    def load(self, network: str, vnode: str, tensors: dict[str, torch.Tensor], step: int) -> None:
        """Replace a hosted VNode's state; the network is at `step` (VNodes built later too). A state refused
        leaves no VNode built for it."""
        self._check_mine(network, vnode)

        def run() -> None:
            built = {v.id for _, v in self.host.local(network)}
            try:
                self.host.vnode(network, vnode).load_state(tensors, step)  # the network's clock is at `step` now
            except BaseException:
                for _, v in self.host.local(network):
                    if v.id not in built:
                        self.host.drop(network, v.id)
                raise

        self.call(run)

    def save_to_storage(self, network: str, vnode: str) -> tuple[str, int]:
        """Write a hosted VNode's state as a safetensors blob through the orchestrator's storage;
        returns (sha256, bytes)."""
        if self.link is None:
            raise Unavailable(f"PNode {self.id} has no checkpoint storage")
        tensors, _ = self.save(network, vnode)
        data = bytes(save_safetensors({k: t.contiguous() for k, t in tensors.items()}))
        return self.link.put_blob(self.id, network, vnode, data), len(data)

    def load_from_storage(self, network: str, vnode: str, step: int, digest: str) -> None:
        """Load a hosted VNode's state from a stored blob (its hash checked against its name)."""
        if self.link is None:
            raise Unavailable(f"PNode {self.id} has no checkpoint storage")
        self._check_mine(network, vnode)
        self.load(network, vnode, load_safetensors(self.link.get_blob(self.id, network, vnode, digest)), step)

    def _check_mine(self, network: str, vnode: str) -> _Network:
        """The network, if `vnode` is one of its VNodes placed here (NotFound otherwise)."""
        net = self._net(network)
        if vnode not in net.spec.nodes:
            raise NotFound(f"network {network!r} has no VNode {vnode!r}")
        if vnode not in net.mine:
            raise NotFound(f"VNode {vnode!r} of network {network!r} is not placed on PNode {self.id}")
        return net

    def list_vnodes(self, network: str = "") -> list[LocalVNode]:
        return [LocalVNode(net, v.id, v.spec.type, v.step, self.host.memory_of(net, v.id))
                for net, v in self.host.local(network or None)]

    def drop(self, network: str, vnode: str = "") -> bool:
        """Drop one hosted VNode, or (no VNode named) the whole network with its placement."""
        if vnode:
            def one() -> bool:
                for slot in (0, 1):
                    self._snapshots.pop((network, vnode, slot), None)
                return self.host.drop(network, vnode)

            return self.call(one)

        def run() -> bool:
            with self._lock:
                known = self._nets.pop(network, None) is not None
            self._started = {k: t for k, t in self._started.items() if k[0] != network}
            self._forget_snapshots(network)
            return bool(self.host.remove_network(network)) or known

        return self.call(run)

    def _forget_snapshots(self, network: str, keep: frozenset[str] = frozenset()) -> None:
        """Free the evidence buffers of a network's VNodes (but those in `keep`); on the compute thread."""
        for key in [k for k in self._snapshots if k[0] == network and k[1] not in keep]:
            del self._snapshots[key]

    def forget_all(self) -> None:
        """Drop every network (the orchestrator forgot this PNode: it will place them again)."""
        for network in self.host.networks():
            self.drop(network)

    # -- outbox thread: remote sends ------------------------------------------------------------
    def _outbox_loop(self) -> None:
        while True:
            try:
                address, hop, attempts, commit = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            with self._lock:
                if hop.run in self._fenced:
                    continue
            if commit is not None:
                self._seal(commit[0], commit[1], hop)
            self.stats["hops_sent"] += 1
            size = hop.value.numel() * hop.value.element_size() if isinstance(hop.value, torch.Tensor) else 0
            self.stats["tensor_bytes_sent"] += size
            if attempts == 0:
                self.timer.sent(hop, size)
            self.hops.send(address, hop, self._on_send_error(address, hop, attempts))

    def _on_send_error(self, address: str, hop: Hop, attempts: int) -> Callable[[Exception], None]:
        return lambda exc: self._send_failed(address, hop, attempts, exc)

    def _send_failed(self, address: str, hop: Hop, attempts: int, exc: Exception) -> None:
        """Try again later when the peer is unreachable or busy (a bounded number of times); else fail the run."""
        most = BUSY_ATTEMPTS if isinstance(exc, ResourceExhausted) else SEND_ATTEMPTS
        if isinstance(exc, (Unavailable, ResourceExhausted)) and attempts + 1 < most and not self._stopping.is_set():
            time.sleep(min(2.0, 0.1 * 2 ** (attempts + 1)))
            try:
                self._outbox.put_nowait((address, hop, attempts + 1, None))  # never wait: may be the outbox thread
                return
            except queue.Full:
                pass
        self._fail(hop, f"cannot deliver to VNode {hop.vnode!r} at {address}: {type(exc).__name__}: {exc}")

    # -- reporting ---------------------------------------------------------------------------
    def _report_loop(self) -> None:
        while True:
            first = self._events.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 512:
                try:
                    nxt = self._events.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._events.put(None)
                    break
                batch.append(nxt)
            if self.link is None:
                continue
            for attempt in range(5):
                try:
                    self.link.report(self.id, batch)
                    break
                except Exception as exc:  # the orchestrator may be restarting
                    log.warning("progress report failed (%s); retrying", exc)
                    if self._stopping.wait(0.2 * 2**attempt):
                        return


def _vocabulary_lookup(vocabularies: dict[str, str]) -> Callable[[str], str]:
    def lookup(name: str) -> str:
        found = vocabularies.get(name)
        if found is None:
            raise NotFound(f"vocabulary {name!r} did not come with the network's placement")
        return found
    return lookup
