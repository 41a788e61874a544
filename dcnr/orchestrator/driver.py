"""Running networks on the fleet: forward, one training step, evaluation, sampling.

Owns each network's step (the one counter of this process; the store persists it) and
loss scale, and the protocol of a step: deploy the placement, describe the run once to
every PNode taking part, send every micro-batch's inputs at once (so PNodes pipeline),
wait until every cost has reported and every PNode has finished every micro-batch, then
check finiteness (fp16) and apply the update on each PNode. It never computes the model:
PNodes do, and report back through `Inbox`. A step run under a validation policy is
committed: the PNodes' commitments go to the `Validator` before the next step begins. A
session's step is timed (`dcnr.orchestrator.timeline`): when each BeginRun left and was
answered, on the driver's clock, beside the timing each PNode reports with its update.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from dcnr.errors import Aborted, DcnrError, Unavailable
from dcnr.orchestrator.fleet import Deployment, Fleet
from dcnr.orchestrator.relays import Relays
from dcnr.orchestrator.store import StateStore
from dcnr.orchestrator.timeline import StepRecord, Timelines
from dcnr.runtime.graph import check_inputs, select_outputs, split_batch
from dcnr.runtime.precision import LossScaler
from dcnr.runtime.router import Router
from dcnr.runtime.sampling import sample_tokens
from dcnr.security import pki
from dcnr.security.pki import PNODE_LIFETIME, CertificateAuthority
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import ExecutionPlan, plan
from dcnr.transport.messages import Membership, Report, Run
from dcnr.validation.digest import hop_key, value_digest
from dcnr.validation.policy import Policy

if TYPE_CHECKING:
    from dcnr.orchestrator.validator import Validator

T = TypeVar("T")
PROBE_TIMEOUT = 10.0  # seconds a registering PNode has to answer the orchestrator at its address
log = logging.getLogger("dcnr.orchestrator")


class StepFailed(Aborted):
    """A step or request could not finish: a PNode reported a failure, died, or it timed out."""


class StateLost(StepFailed):
    """VNodes lost their state with their PNode: nothing may run on the network until it is restored."""


@dataclass
class _Waiting:
    """What PNodes have reported for one run (all its micro-batches)."""

    hosts: Mapping[str, str]  # VNode -> the PNode that runs it: the only one whose reports about it count
    cond: threading.Condition = field(default_factory=threading.Condition)
    outputs: dict[tuple[int, str, int], Any] = field(default_factory=dict)  # (micro-batch, vnode, slot) -> value
    done: dict[int, set[str]] = field(default_factory=dict)  # micro-batch -> PNodes finished with it
    error: str = ""


class Inbox:
    """Progress reports from PNodes, delivered to whoever waits for that run."""

    def __init__(self) -> None:
        self._runs: dict[str, _Waiting] = {}
        self._lock = threading.Lock()

    def open(self, run: str, hosts: Mapping[str, str]) -> _Waiting:
        """Wait for the reports of `run`, placed as `hosts` says (VNode -> PNode)."""
        with self._lock:
            r = self._runs[run] = _Waiting(hosts)
            return r

    def close(self, run: str) -> None:
        with self._lock:
            self._runs.pop(run, None)

    def deliver(self, pnode: str, reports: Sequence[Report]) -> None:
        """Reports of PNode `pnode` (authenticated by the transport). Reports from a PNode with no part in the
        run are ignored, and so is an output (or cost) of a VNode it does not run."""
        for rep in reports:
            with self._lock:
                r = self._runs.get(rep.run)
            if r is None:
                continue  # late: nobody waits any more
            if (r.hosts.get(rep.vnode) != pnode) if rep.kind == "output" else (pnode not in r.hosts.values()):
                log.warning("ignored a %s report of run %s from PNode %s, which does not run %s", rep.kind,
                            rep.run, pnode, repr(rep.vnode) if rep.kind == "output" else "any of its VNodes")
                continue
            with r.cond:
                if rep.kind == "output":
                    r.outputs[(rep.micro_batch, rep.vnode, rep.slot)] = rep.value
                elif rep.kind == "done":
                    r.done.setdefault(rep.micro_batch, set()).add(pnode)
                elif rep.kind == "failed" and not r.error:
                    r.error = rep.error or f"VNode {rep.vnode!r} failed on PNode {pnode}"
                r.cond.notify_all()


class Members:
    """What `NodeManagementService` does: certificates from the CA (none without one: in-process fleets),
    membership through the fleet, reports into the inbox."""

    def __init__(self, fleet: Fleet, inbox: Inbox, ca: CertificateAuthority | None = None,
                 certificate_lifetime: datetime.timedelta = PNODE_LIFETIME, relays: Relays | None = None,
                 probe: bool = False) -> None:
        self.fleet = fleet
        self.inbox = inbox
        self.ca = ca
        self.certificate_lifetime = certificate_lifetime
        self.heartbeat_interval = fleet.heartbeat_interval
        self.relays = relays
        self.probe_addresses = probe  # call registering PNodes back at their addresses first

    def enroll(self, csr: bytes, role: str = pki.PNODE) -> tuple[str, bytes]:
        if self.ca is None:
            raise Unavailable("this orchestrator issues no certificates")
        return self.ca.issue_pnode(csr, self.certificate_lifetime, role)

    def probe(self, member: Membership) -> str:
        """Why this orchestrator cannot reach a registering PNode at its address ("" when it answers, or when
        this orchestrator does not probe)."""
        if not self.probe_addresses:
            return ""
        try:
            self.fleet.connector.pnode(member.address).health(PROBE_TIMEOUT)
        except DcnrError as exc:
            return f"this orchestrator cannot reach PNode {member.id} at {member.address} ({exc})"
        return ""

    def register(self, member: Membership) -> None:
        self.fleet.register(member)

    def assign_relay(self, pnode: str, avoid: str = "") -> tuple[str, str]:
        """(relay id, host:port) a PNode behind NAT attaches to ("" host: this orchestrator's)."""
        if self.relays is None:
            raise Unavailable("this orchestrator relays for no PNode")
        chosen = self.relays.assign(pnode, avoid)
        return chosen.id, chosen.address

    def register_relay(self, relay: str, address: str) -> None:
        if self.relays is None:
            raise Unavailable("this orchestrator takes no relays")
        self.relays.register(relay, address)

    def heartbeat_relay(self, relay: str, attached: int, bytes_forwarded: int, hop_bytes: int = 0,
                        certificate: bytes = b"") -> bytes:
        if self.relays is None:
            raise Unavailable("this orchestrator takes no relays")
        self.relays.heartbeat(relay, attached, bytes_forwarded, hop_bytes)
        return self._renewed(certificate)

    def unregister(self, pnode: str) -> bool:
        return self.fleet.unregister(pnode)

    def heartbeat(self, pnode: str, load: float, certificate: bytes = b"") -> bytes:
        self.fleet.heartbeat(pnode, load)
        return self._renewed(certificate)

    def _renewed(self, certificate: bytes) -> bytes:
        """A renewed certificate for one past half its life, else empty bytes."""
        if self.ca is None or not certificate:
            return b""
        issued, expires = pki.issued_at(certificate), pki.expires_at(certificate)
        if time.time() < issued + (expires - issued) / 2:
            return b""
        return self.ca.renew(certificate, self.certificate_lifetime)

    def deliver(self, pnode: str, reports: Sequence[Report]) -> None:
        self.inbox.deliver(pnode, reports)


@dataclass
class NetworkState:
    """A network as the driver runs it: `spec` is the executed graph of `plan` (SPEC §6 passes applied),
    which placement and routing follow; `plan.written` is the graph as submitted."""

    plan: ExecutionPlan
    yaml: str
    router: Router
    step: int
    scaler: LossScaler
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spec(self) -> NetworkSpec:
        return self.plan.spec


class Driver:
    def __init__(self, store: StateStore, fleet: Fleet, inbox: Inbox, timeout: float = 600.0,
                 vocabularies: Callable[[NetworkSpec], dict[str, str]] = lambda spec: {},
                 from_seed: Callable[[str, int], bool] = lambda name, step: False,
                 validator: Validator | None = None, timelines: Timelines | None = None) -> None:
        self.store = store
        self.timelines = timelines  # sessions' recent steps, as timed (none: steps are not timed)
        self.fleet = fleet
        self.inbox = inbox
        self.timeout = timeout
        self.vocabularies = vocabularies  # stored vocabularies a network's tokenizer nodes name, as JSON
        self.from_seed = from_seed  # whether a network at a step still has its seed's initial parameters
        self.validator = validator  # judges committed steps (none: steps are never committed)
        self._networks: dict[str, NetworkState] = {}
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="driver")

    def network(self, name: str) -> NetworkState:
        with self._lock:
            found = self._networks.get(name)
            if found is None:
                rec = self.store.get_network(name)
                executed = plan(parse_stored_network(rec.yaml, name))
                spec = executed.spec
                fp16 = any("fp16" in (n.param_precision, n.activation_precision) for n in spec.nodes.values())
                found = NetworkState(executed, rec.yaml, Router(spec), rec.step, LossScaler(enabled=fp16))
                self._networks[name] = found
            return found

    def forget(self, name: str) -> None:
        """Drop cached state of a network that was deleted or redefined, and its VNodes on the PNodes."""
        with self._lock:
            self._networks.pop(name, None)
        self.fleet.forget_network(name)
        if self.validator is not None:
            self.validator.forget_network(name)
        for pid in {p.id for p in self.fleet.alive()}:
            with contextlib.suppress(DcnrError):  # an unreachable PNode holds nothing it will be asked for again
                self.fleet.client(pid).drop(name)

    def deploy(self, net: NetworkState, batch_size: int | None = None, restoring: bool = False) -> Deployment:
        """The network placed on live PNodes, every PNode concerned holding the current placement.

        VNodes placed again after their PNode was lost are built from the seed, which is their state
        only while the network is untrained; otherwise StateLost, unless `restoring` (the caller puts
        the whole state back)."""
        name = net.spec.name
        deployment = self.fleet.deploy(net.spec, net.yaml, net.spec.seed, net.step, self.vocabularies(net.spec),
                                       batch_size)
        lost = {} if restoring else self.fleet.lost(name)
        if lost and self.from_seed(name, net.step):
            self.fleet.restored(name, max(lost.values()))
        elif lost:
            names = sorted(lost)
            raise StateLost(f"network {name!r} lost the state of VNode(s) {', '.join(names[:4])}"
                            f"{f' and {len(names) - 4} more' if len(names) > 4 else ''} with the PNode that "
                            "hosted them; a training session of it restores its last checkpoint when resumed, "
                            "or import the network again (dcnr network import)")
        return deployment

    # -- the parts of a run ------------------------------------------------------------------------
    def _on_each(self, pnodes: Sequence[str], what: str, fn: Callable[[str], T]) -> list[T]:
        """`fn(pnode)` on every PNode at once; StepFailed naming the first PNode that failed."""
        futures = [(p, self.pool.submit(fn, p)) for p in pnodes]
        results, failed = [], ""
        for p, f in futures:
            try:
                results.append(f.result())
            except DcnrError as exc:
                failed = failed or f"{what} failed on PNode {p}: {exc}"
        if failed:
            raise StepFailed(failed)
        return results

    def _begin(self, net: NetworkState, deployment: Deployment, run: Run, chunks: Sequence[Mapping[str, Any]]
               ) -> dict[str, tuple[float, float]]:
        """Describe the run to every PNode taking part, then send each micro-batch's inputs; returns when each
        PNode's BeginRun was sent and answered (`time.monotonic()`)."""
        begun: dict[str, tuple[float, float]] = {}

        def begin(pnode: str) -> None:
            sent = time.monotonic()
            self.fleet.client(pnode).begin_run(run)
            begun[pnode] = (sent, time.monotonic())

        self._on_each(deployment.pnodes(), f"run {run.id}", begin)
        hops = self.fleet.hops()
        for mb, chunk in enumerate(chunks):
            for hop in net.router.inputs(run, mb, chunk):
                pid = deployment.assignments[hop.vnode]
                try:
                    hops.send_now(deployment.addresses[pid], hop, timeout=60)
                except DcnrError as exc:
                    raise StepFailed(f"cannot send input to VNode {hop.vnode!r} on PNode {pid}: {exc}") from None
        return begun

    def _wait(self, run: _Waiting, done: Callable[[], bool], what: str, pnodes: Sequence[str] = ()) -> None:
        """Until `done()`; fails on a reported error, a PNode of the run marked dead, or the timeout."""
        deadline = time.monotonic() + self.timeout
        next_check = time.monotonic() + 1.0
        with run.cond:
            while not done():
                if run.error:
                    raise StepFailed(run.error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepFailed(f"{what} timed out after {self.timeout:g} s")
                run.cond.wait(min(left, 1.0))
                if pnodes and time.monotonic() >= next_check and not done():  # liveness: once a second
                    next_check = time.monotonic() + 1.0
                    alive = {p.id for p in self.fleet.alive()}
                    gone = sorted(set(pnodes) - alive)
                    if gone:
                        raise StepFailed(f"{what} failed: PNode {gone[0]} left the fleet or stopped heartbeating")
            if run.error:
                raise StepFailed(run.error)

    # -- training ------------------------------------------------------------------------------
    def train_step(self, name: str, inputs: Mapping[str, Any], micro_batches: int = 1, run_prefix: str = "train",
                   validation: Policy | None = None, session: str = "", session_step: int = 0
                   ) -> tuple[dict[str, float], int, bool, dict[str, float]]:
        """One step across the fleet: (costs averaged over micro-batches, new step, skipped, learning rates).
        Under a `validation` policy other than off the step is committed and handed to the validator. A
        session's step (`session_step`, counted from 1) is kept timed in `timelines`."""
        net = self.network(name)
        spec = net.spec
        if not spec.costs:
            raise ValueError(f"network {name!r} has no costs to train")
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be at least 1, got {micro_batches}")
        with net.lock:
            probe = Run(name, "", net.step, "train", micro_batches)
            chunks = split_batch(check_inputs(spec, inputs, set(net.router.needed(probe))), micro_batches)
            deployment = self.deploy(net, batch_size=_batch_size(chunks[0]))
            pnodes = deployment.pnodes()
            commit = validation is not None and validation.mode != "off" and self.validator is not None
            run = Run(name, f"{run_prefix}/{name}/{net.step}/{uuid.uuid4().hex[:8]}", net.step, "train",
                      micro_batches, net.scaler.scale / micro_batches, (), deployment.digest, deployment.version,
                      commit)
            # PNodes that report each micro-batch done: those hosting a VNode of the backward pass
            finishing = {deployment.assignments[v] for v in net.router.live & net.router.needed(run)}
            costs_at = net.router.reported(run)
            waiting = self.inbox.open(run.id, deployment.assignments)
            try:
                begun = self._begin(net, deployment, run, chunks)
                self._wait(waiting, lambda: all(
                    waiting.done.get(mb, set()) >= finishing
                    and all((mb, n, s) in waiting.outputs for n, s in costs_at) for mb in range(micro_batches)),
                    f"step {net.step} of network {name!r}", pnodes)
                odd = _odd_costs(waiting.outputs, deployment.assignments)
                if odd:
                    raise StepFailed(odd)
            except BaseException:
                # nothing half-done may poison the retry of this step; an unreachable PNode is the
                # failure already being reported
                with contextlib.suppress(StepFailed):
                    self._on_each(pnodes, "abandoning the step", lambda p: self.fleet.client(p).reset_to_step(
                        name, net.step, fence_run=run.id))
                raise
            finally:
                self.inbox.close(run.id)
            costs = {}
            unusual = set()  # costs that are not finite: their units are verified whatever the draw
            for b in spec.costs:
                total = 0.0
                for mb in range(micro_batches):  # micro-batch order, as the LocalExecutor sums
                    total += float(waiting.outputs[(mb, b.node_id, b.slot_id)]) / micro_batches
                costs[b.name] = total
                if not math.isfinite(total) and not net.scaler.enabled:
                    unusual.add(b.node_id)
            finite = True
            if net.scaler.enabled:
                finite = all(self._on_each(pnodes, "the finiteness check",
                                           lambda p: self.fleet.client(p).check_finite(name)))
            scale = net.scaler.scale
            apply = net.scaler.update(finite)
            replies = self._on_each(pnodes, "the update", lambda p: self.fleet.client(p).apply_update(
                name, net.step + 1, scale, apply))
            if self.timelines is not None and session:
                began = min(sent for sent, _ in begun.values())
                self.timelines.add(session, StepRecord(
                    session_step, run.id, time.monotonic() - began,
                    {p: (sent - began, answered - began) for p, (sent, answered) in begun.items()},
                    deployment.assignments, {p: r.timing for p, r in zip(pnodes, replies, strict=True)
                                             if r.timing is not None}))
            net.step += 1
            self.store.set_network_step(name, net.step)
            lrs: dict[str, float] = {}
            for r in replies:
                lrs.update(r.learning_rates)
            if not commit and self.validator is not None:
                self.validator.forget_state(name)  # trained without commitments: its known state is gone
            if commit:
                assert self.validator is not None and validation is not None
                sent = {hop_key(mb, "fwd", h.vnode, h.index): value_digest(h.value) for mb, chunk in enumerate(chunks)
                        for h in net.router.inputs(run, mb, chunk)}
                reported = {hop_key(mb, "out", n, s): value_digest(waiting.outputs[(mb, n, s)])
                            for mb in range(micro_batches) for n, s in costs_at}
                self.validator.after_step(spec, net.router, net.yaml, self.vocabularies(spec), run, deployment,
                                          {p: r.commitments for p, r in zip(pnodes, replies, strict=True)}, sent,
                                          reported, scale, apply, validation, session, unusual)
            metrics = {m.name: lrs[m.node_id] for m in spec.metrics if m.node_id in lrs}
            return costs, net.step, not apply, metrics

    # -- forward-only work -----------------------------------------------------------------------
    def _evaluate(self, name: str, inputs: Mapping[str, Any], kind: str, outputs: Sequence[str] = ()
                  ) -> dict[tuple[str, int], Any]:
        net = self.network(name)
        probe = Run(name, "", 0, "infer" if kind == "infer" else "eval", outputs=tuple(outputs))
        batch = check_inputs(net.spec, inputs, set(net.router.needed(probe)))
        with net.lock:  # deploying and describing the run see one placement
            deployment = self.deploy(net, batch_size=_batch_size(batch))
            step = uuid.uuid4().int & ((1 << 62) - 1)  # forward-only work never collides with another request
            run = Run(name, f"{kind}/{name}/{uuid.uuid4().hex}", step, probe.kind, 1, 1.0, tuple(outputs),
                      deployment.digest, deployment.version)
            waiting = self.inbox.open(run.id, deployment.assignments)
            try:
                self._begin(net, deployment, run, [batch])
            except BaseException:
                self.inbox.close(run.id)
                raise
        keys = net.router.reported(run)
        try:
            self._wait(waiting, lambda: all((0, n, s) in waiting.outputs for n, s in keys),
                       f"{kind} request on network {name!r}", deployment.pnodes())
        finally:
            self.inbox.close(run.id)
        return {(n, s): waiting.outputs[(0, n, s)] for n, s in keys}

    def forward(self, name: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        spec = self.network(name).spec
        wanted = select_outputs(spec, set(inputs), outputs)
        produced = self._evaluate(name, inputs, "infer", wanted)
        by_name = {b.name: b for b in spec.outputs}
        return {o: produced[(by_name[o].node_id, by_name[o].slot_id)] for o in wanted}

    def costs(self, name: str, inputs: Mapping[str, Any]) -> dict[str, float]:
        """The network's costs on one batch, without training (dropout off, nothing cached)."""
        spec = self.network(name).spec
        if not spec.costs:
            raise ValueError(f"network {name!r} has no costs to evaluate")
        produced = self._evaluate(name, inputs, "eval")
        return {b.name: float(produced[(b.node_id, b.slot_id)]) for b in spec.costs}

    def generate(self, name: str, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float,
                 top_k: int | None, seed: int) -> Iterator[int]:
        spec = self.network(name).spec
        yield from sample_tokens(lambda x, outs: self.forward(name, x, outs), spec, prompt_ids, max_new_tokens,
                                 temperature, top_k, seed)

    def reset(self, name: str, step: int, loss_scale: float = 0.0, good_steps: int = 0) -> None:
        """The network is back at `step` (restored from a checkpoint), with that step's loss scale."""
        net = self.network(name)
        net.step = step
        if self.validator is not None:  # whoever restored it says what is known of the new state, if anything
            self.validator.forget_state(name)
        if loss_scale:
            net.scaler.scale, net.scaler.good_steps = loss_scale, good_steps
        self.store.set_network_step(name, step)

    def step_of(self, name: str) -> int:
        return self.network(name).step

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _odd_costs(outputs: Mapping[tuple[int, str, int], Any], hosts: Mapping[str, str]) -> str:
    """Why a reported cost is not a cost ("" when all are): each must be a floating-point scalar."""
    for (mb, vnode, slot), value in sorted(outputs.items(), key=lambda kv: kv[0]):
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
            what = f"a {value.dtype} tensor of shape {list(value.shape)}" if isinstance(value, torch.Tensor) else (
                type(value).__name__)
            return (f"PNode {hosts.get(vnode, '?')} reported {what} as cost {vnode!r} slot {slot} of micro-batch "
                    f"{mb}: a cost is a floating-point scalar")
    return ""


def _batch_size(batch: Mapping[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
        if isinstance(v, list):
            return len(v)
    return 1
