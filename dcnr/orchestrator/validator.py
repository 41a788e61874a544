"""Validation of untrusted work (SPEC §12): commitments checked, work units re-executed, verdicts.

After every committed training step the driver hands over each PNode's commitments. Then:

1. **Cross-check** (every step, cheap): what each PNode says it sent on an edge must be what the
   receiver says it got, the network inputs what the driver sent, the costs what the PNode
   reported. A receiver holds the sender's signature on each hop, so a disagreement is pinned on
   whoever cannot back their word: a sender whose signed hop differs from its commitment, or a
   receiver that claims a hop no signature covers.
2. **Sampling**: each work unit (one tie group of VNodes in one step) is drawn with the
   policy's probability (a tenth of it for trusted PNodes, never zero) by the operating system's
   random generator, after the commitments are in, so no PNode can tell which of its units will be
   checked; cheap invariants (a non-finite cost, a gradient-norm outlier) draw a unit for sure. The
   unit's host hands over the evidence while the next step runs (its state as the step found it and
   the hops it got and sent; PNodes keep it until the step after the next begins), checked against
   the state it committed to before and the hops' commitments.
3. **Re-execution**, beside training on a thread pool: a verifier of the same compute class that
   does not host the unit and does not connect from the host's address (loopback excepted: that is
   the operator's own machine) re-executes it; its digests must equal the host's bit for bit. On a
   mismatch a referee (trusted PNodes preferred) re-executes it too. If it agrees with the verifier,
   the host is charged ("fail"); the verifier is charged ("false-accusation") only if a second
   referee sides with the host as well (unless the first is trusted, or there is no second).
   Otherwise (no referee, split referees, different answers) the step is rolled back and nobody
   is charged ("unresolved").
4. **Faults**: a charge that quarantines a PNode (see `Standings`), or an unresolved mismatch,
   becomes a `Fault` naming the earliest step whose result can no longer be trusted: the step of the
   fault, and for a convicted PNode also every step in which it did work that no other verifier
   cleared or in which it vouched for someone else's. Sessions take faults and roll back to a
   checkpoint at or before that step (`take_faults`); `restored` cuts the timeline there.

It keeps, per network, the timeline since its last restore: which PNode did which unit at which
step and its verdict, the digest of each VNode's current state, and pending work. It does not move
state or decide when to roll back (sessions do), and it never computes the model: verifiers do.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import secrets
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from safetensors.torch import load as load_safetensors

from dcnr.errors import DcnrError
from dcnr.orchestrator.fleet import Deployment, Fleet
from dcnr.orchestrator.standing import Standings
from dcnr.orchestrator.store import PNodeRecord, ValidationEvent
from dcnr.runtime.router import Router
from dcnr.spec.model import NetworkSpec
from dcnr.transport.messages import Commitment, Evidence, Replay, Run
from dcnr.validation.digest import hop_key, hop_signed_by, load_public_key, parse_hop_key, state_digest, value_digest
from dcnr.validation.policy import Policy

log = logging.getLogger("dcnr.orchestrator")

SEED = "seed"  # a VNode's known state: the seed's initial parameters (a verifier builds them itself)
NORM_WINDOW = 20  # gradient norms remembered per VNode for the outlier flag
NORM_OUTLIER = 10.0  # a gradient norm this many times the recent median draws the unit for verification
VERIFY_ATTEMPTS = 3  # verifiers tried when one cannot be reached


@dataclass(frozen=True)
class Fault:
    """Work of a network that cannot be trusted from `step` (a network step) on."""

    network: str
    step: int
    detail: str
    convicted: tuple[str, ...] = ()


@dataclass
class _Unit:
    """One work unit of the timeline: a tie group's part in one step, and what became of its check."""

    key: str  # its VNodes joined by "+"
    vnodes: tuple[str, ...]
    host: str
    step: int
    run: str
    sampled: bool = False
    verdict: str = ""  # "" pending or unsampled | pass | fail | false-accusation | unresolved | (un)verifi(ed|able)
    verifier: str = ""


@dataclass
class _Timeline:
    """A network's committed steps since its state was last restored."""

    units: dict[tuple[int, str], _Unit] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)  # VNode -> digest of its current state | SEED
    norms: dict[str, deque[float]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    pending: set[tuple[int, str]] = field(default_factory=set)  # units (or "checkpoint") being verified


class Validator:
    def __init__(self, fleet: Fleet, standings: Standings, blob_reader: Callable[[str], bytes] | None = None,
                 workers: int = 2) -> None:
        self.fleet = fleet
        self.standings = standings
        self.blob_reader = blob_reader  # checkpoint blobs by sha256, to check them against commitments
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
        self.fetch_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="evidence")
        self._fetching: dict[str, list[Future[None]]] = {}  # network -> the last step's evidence fetches
        self.stats: dict[str, float] = {"after_step_seconds": 0.0, "sampled_units": 0}  # the driver's share
        self._random = secrets.SystemRandom()  # unpredictable to PNodes
        self._timelines: dict[str, _Timeline] = {}
        self._convicted: set[str] = set()
        self._lock = threading.Condition()

    def _timeline(self, network: str) -> _Timeline:
        return self._timelines.setdefault(network, _Timeline())

    # -- after each committed step -----------------------------------------------------------------
    def after_step(self, spec: NetworkSpec, router: Router, yaml_text: str, vocabularies: Mapping[str, str],
                   run: Run, deployment: Deployment, commitments: Mapping[str, Sequence[Commitment]],
                   sent_inputs: Mapping[str, str], reported: Mapping[str, str], loss_scale: float, apply: bool,
                   policy: Policy, session: str = "", unusual: Collection[str] = ()) -> None:
        """Check one step's commitments, draw units to verify and start verifying them (in the background);
        units holding an `unusual` VNode (one whose cost was not finite) are verified whatever the draw."""
        network = spec.name
        started = time.perf_counter()
        with self._lock:
            tl = self._timeline(network)
            known_before = dict(tl.known)
        for culprit, detail in self._cross_check(spec, router, run, deployment, commitments, sent_inputs, reported):
            self._fault(network, run.step, f"step {run.step}: {detail}", culprit, "fault", "", session)
        by_vnode = {c.vnode: (pnode, c) for pnode, cs in commitments.items() for c in cs}
        units: list[_Unit] = []
        seen: set[str] = set()
        for vnode, (pnode, c) in sorted(by_vnode.items()):
            if vnode in seen or not (c.sent or c.received):
                continue  # no part in this run
            group = tuple(sorted(spec.tie_group(vnode) & set(by_vnode)))
            seen.update(group)
            units.append(_Unit("+".join(group), group, pnode, run.step, run.id))
        flagged = self._flagged(tl, by_vnode, spec) | {
            "+".join(sorted(spec.tie_group(v) & set(by_vnode))) for v in unusual if v in by_vnode}
        trusted = {p: self.standings.trusted(p) for p in commitments}
        with self._lock:
            for unit in units:
                rate = policy.rate_for(trusted[unit.host])
                unit.sampled = unit.key in flagged or (rate > 0 and self._random.random() < rate)
                tl.units[(unit.step, unit.key)] = unit
            for _, c in by_vnode.values():
                tl.known[c.vnode] = c.state
        alone = {h for h in {u.host for u in units if u.sampled}
                 if not (self._choose(h, {h}) or self._choose(h, {h}, same_class=False))}
        # PNodes keep a step's evidence until the step after the next begins: the previous step's fetches are
        # done before this returns (they had a whole step to run), this step's run beside the next one
        for earlier in self._fetching.pop(network, []):
            earlier.result()
        fetching = []
        for unit in (u for u in units if u.sampled):
            if unit.host in alone:  # nobody could re-execute it: no evidence is fetched for nothing
                unit.verdict = "unverifiable"
                self._event(network, session, unit, "unverifiable", detail="no other PNode can verify its host")
                continue
            with self._lock:
                tl.pending.add((unit.step, unit.key))
            fetching.append(self.fetch_pool.submit(self._fetch_and_verify, spec, router, yaml_text, vocabularies,
                                                   run, unit, by_vnode, known_before, loss_scale, apply, session))
        self._fetching[network] = fetching
        self.stats["after_step_seconds"] += time.perf_counter() - started
        self.stats["sampled_units"] += len(fetching)

    def _fetch_and_verify(self, spec: NetworkSpec, router: Router, yaml_text: str, vocabularies: Mapping[str, str],
                          run: Run, unit: _Unit, by_vnode: Mapping[str, tuple[str, Commitment]],
                          known: Mapping[str, str], loss_scale: float, apply: bool, session: str) -> None:
        """Fetch a unit's evidence (now), then have it re-executed (on the verification pool)."""
        try:
            replay = self._evidence(spec, router, yaml_text, vocabularies, run, unit, by_vnode, known, loss_scale,
                                    apply, session)
        except Exception as exc:  # never lost silently: the unit stays unverified
            log.warning("fetching the evidence of unit %s of step %d failed: %s", unit.key, unit.step, exc)
            replay = None
        if replay is None:
            with self._lock:
                self._timeline(spec.name).pending.discard((unit.step, unit.key))
                self._lock.notify_all()
            return
        self.pool.submit(self._verify_job, spec.name, unit, replay, by_vnode, session)

    def _cross_check(self, spec: NetworkSpec, router: Router, run: Run, deployment: Deployment,
                     commitments: Mapping[str, Sequence[Commitment]], sent_inputs: Mapping[str, str],
                     reported: Mapping[str, str]) -> list[tuple[str, str]]:
        """(culprit, why) for every disagreement between commitments; culprit "" when it cannot be pinned."""
        found: list[tuple[str, str]] = []
        sent: dict[str, tuple[str, str]] = {}  # hop key -> (sending PNode, digest)
        for pnode, cs in commitments.items():
            for c in cs:
                if deployment.assignments.get(c.vnode) != pnode:
                    found.append((pnode, f"PNode {pnode} committed for VNode {c.vnode!r}, which it does not host"))
                    continue
                for key, digest in c.sent.items():
                    if _origin(router, key) != c.vnode:
                        found.append((pnode, f"PNode {pnode} committed hop {key} as sent by {c.vnode!r}"))
                    sent[key] = (pnode, digest)
        keys = {p: load_public_key(bytes.fromhex(rec.hardware["public_key"])) for p in commitments
                if (rec := self._record(p)) is not None and rec.hardware.get("public_key")}
        for key, digest in reported.items():  # costs the PNode reported, against what it committed
            pnode, committed = sent.get(key, ("", ""))
            host = deployment.assignments.get(parse_hop_key(key)[2], "")
            if committed != digest:
                found.append((host, f"PNode {host} reported {key} other than it committed"))
        for pnode, cs in commitments.items():
            for c in cs:
                for key, got in c.received.items():
                    if parse_hop_key(key)[2] != c.vnode:
                        found.append((pnode, f"PNode {pnode} committed hop {key} as received by {c.vnode!r}"))
                        continue
                    if got.sender == "":  # a network input from the driver
                        if sent_inputs.get(key) != got.digest:
                            found.append((pnode, f"PNode {pnode} committed network input {key} other than sent"))
                        continue
                    sender, digest = sent.get(key, ("", ""))
                    if got.sender == sender and digest == got.digest:
                        continue
                    if got.sender == pnode:  # a colocated hop: one PNode's own commitments disagree
                        found.append((pnode, f"PNode {pnode} committed hop {key} twice, differently"))
                        continue
                    key_of = keys.get(got.sender)
                    if key_of is None:
                        found.append(("", f"hop {key}: PNode {got.sender} and PNode {pnode} disagree (no keys to "
                                          "tell who is right)"))
                    elif hop_signed_by(key_of, spec.name, run.id, key, got.digest, got.signature):
                        found.append((got.sender, f"PNode {got.sender} signed hop {key} as one value and committed "
                                                  "another"))
                    else:
                        found.append((pnode, f"PNode {pnode} claims hop {key} from PNode {got.sender} without its "
                                             "signature"))
        received = {key for cs in commitments.values() for c in cs for key in c.received}
        for key, (pnode, _) in sorted(sent.items()):  # every hop to a VNode must be committed as received
            _, op, dst, _ = parse_hop_key(key)
            if op != "out" and key not in received:
                owner = deployment.assignments.get(dst, "")
                found.append((owner, f"PNode {owner} did not commit hop {key}, which PNode {pnode} sent"))
        return found

    def _flagged(self, tl: _Timeline, by_vnode: Mapping[str, tuple[str, Commitment]], spec: NetworkSpec) -> set[str]:
        """Units the cheap invariants draw for verification: a gradient norm that is not finite or far above
        the VNode's recent median. (Costs' finiteness and shapes are checked where they arrive.)"""
        flagged = set()
        with self._lock:
            for vnode, (_, c) in by_vnode.items():
                window = tl.norms.setdefault(vnode, deque(maxlen=NORM_WINDOW))
                if not math.isfinite(c.grad_norm) or (
                        len(window) >= 3 and c.grad_norm > NORM_OUTLIER * max(statistics.median(window), 1e-12)):
                    flagged.add("+".join(sorted(spec.tie_group(vnode) & set(by_vnode))))
                    log.info("gradient norm %.3g of VNode %s is an outlier: its unit is verified", c.grad_norm,
                             vnode)
                if math.isfinite(c.grad_norm):
                    window.append(c.grad_norm)
        return flagged

    def _evidence(self, spec: NetworkSpec, router: Router, yaml_text: str, vocabularies: Mapping[str, str],
                  run: Run, unit: _Unit, by_vnode: Mapping[str, tuple[str, Commitment]], known: Mapping[str, str],
                  loss_scale: float, apply: bool, session: str) -> Replay | None:
        """The unit's evidence from its host, checked against what is known of its state and its commitments."""
        try:
            evidence = self.fleet.client(unit.host).collect_evidence(spec.name, run.id, unit.vnodes)
        except DcnrError as exc:  # it may have died: its work is redone anyway when it is found dead
            self._event(spec.name, session, unit, "unverified", detail=f"no evidence from its host: {exc}")
            unit.verdict = "unverified"
            return None
        problem = ""
        state = {}
        for vnode in unit.vnodes:
            before = known.get(vnode, "")
            given = evidence.state.get(vnode)
            if before == SEED:
                continue  # the verifier builds the seed's state itself
            if given is None:
                problem = f"no state of VNode {vnode!r} in its evidence"
                break
            if before and state_digest(given) != before:
                problem = f"the state of VNode {vnode!r} it gave is not the one it committed to"
                break
            state[vnode] = given
        inside = set(unit.vnodes)
        inputs = []
        for hop in evidence.inputs if not problem else ():
            key = hop_key(hop.micro_batch, hop.op, hop.vnode, hop.index)
            if _origin(router, key) in inside:
                continue  # between the unit's own VNodes: the verifier computes it again
            committed = by_vnode.get(hop.vnode, ("", None))[1]
            if hop.vnode not in inside or committed is None or key not in committed.received:
                problem = f"its evidence holds hop {key}, which it did not commit to receiving"
                break
            if value_digest(hop.value) != committed.received[key].digest:
                problem = f"hop {key} in its evidence differs from what it committed to receiving"
                break
            inputs.append(hop)
        outputs = []
        for hop in evidence.outputs if not problem else ():
            key = hop_key(hop.micro_batch, hop.op, hop.vnode, hop.index)
            origin = _origin(router, key)
            if origin not in inside or value_digest(hop.value) != by_vnode[origin][1].sent.get(key):
                problem = f"hop {key} in its evidence is not what it committed to sending"
                break
            outputs.append(hop)
        if not problem:
            given_keys = {hop_key(h.micro_batch, h.op, h.vnode, h.index) for h in inputs}
            wanted = {k for v in unit.vnodes for k in by_vnode[v][1].received if _origin(router, k) not in inside}
            missing = sorted(wanted - given_keys)
            if missing:
                problem = f"its evidence lacks hop {missing[0]}"
        if problem:
            unit.verdict = "fail"
            self._fault(spec.name, unit.step, f"step {unit.step}, unit {unit.key}: {problem}", unit.host, "fail", "",
                        session, unit)
            return None
        return Replay(spec.name, yaml_text, spec.seed, dict(vocabularies), unit.vnodes, run, loss_scale, apply,
                      Evidence(state, inputs, outputs), tolerance=_tolerance(spec, unit.vnodes))

    # -- verification (pool threads) ------------------------------------------------------------------
    def _verify_job(self, network: str, unit: _Unit, replay: Replay, by_vnode: Mapping[str, tuple[str, Commitment]],
                    session: str) -> None:
        try:
            self._verify(network, unit, replay, {v: by_vnode[v][1] for v in unit.vnodes}, session)
        except Exception as exc:  # a verification that cannot finish leaves the unit unverified, never a crash
            log.warning("verifying unit %s of step %d failed: %s", unit.key, unit.step, exc)
            unit.verdict = "unverified"
            self._event(network, session, unit, "unverified", detail=str(exc))
        finally:
            with self._lock:
                tl = self._timelines.get(network)
                if tl is not None and tl.units.get((unit.step, unit.key)) is unit:
                    tl.pending.discard((unit.step, unit.key))
                self._lock.notify_all()

    def _verify(self, network: str, unit: _Unit, replay: Replay,
                committed: dict[str, Commitment], session: str) -> None:
        tried: set[str] = set()
        answer, verifier = None, ""
        same = bool(self._choose(unit.host, exclude={unit.host}))  # of the host's compute class: bit for bit
        tolerance = 0.0 if same else replay.tolerance
        replay = dataclasses.replace(replay, tolerance=tolerance, evidence=replay.evidence if not same else
                                     dataclasses.replace(replay.evidence, outputs=[]))  # bits need no claims
        for _ in range(VERIFY_ATTEMPTS):
            verifier = self._choose(unit.host, exclude=tried | {unit.host}, same_class=same)
            if not verifier:
                break
            tried.add(verifier)
            try:
                answer = self.fleet.client(verifier).verify(replay)
                break
            except DcnrError as exc:
                log.info("verifier %s could not re-execute unit %s: %s", verifier, unit.key, exc)
        if answer is None:
            unit.verdict = "unverifiable" if not tried else "unverified"
            self._event(network, session, unit, unit.verdict, detail=(
                "no other PNode can verify its host" if not tried else "no verifier could re-execute it"))
            return
        unit.verifier = verifier
        if not same:
            committed = _comparable(committed, answer)  # another class: the hops it could compare, no state
        if _same(answer, committed):
            unit.verdict = "pass"
            self._event(network, session, unit, "pass", verifier, detail="" if same else (
                f"verifier of another compute class: hops within {tolerance:g}, the update not compared"))
            return
        referee, second = self._referee(unit, replay, tried, same)
        where = _difference(answer, committed)
        if second is not None and _same(second, committed):
            # a verifier is charged only when a second referee sides with the host too (one referee colluding
            # with the host must not get an honest verifier quarantined), unless the first is trusted or no
            # second one exists
            tried.add(referee)
            other, third = ("", None) if self.standings.trusted(referee) else self._referee(unit, replay, tried, same)
            if not other or (third is not None and _same(third, committed)):
                unit.verdict = "pass"
                self._fault(network, unit.step, f"step {unit.step}, unit {unit.key}: verifier {verifier} accused "
                            f"honest work ({where})", verifier, "false-accusation",
                            f"{referee}+{other}" if other else referee, session, unit)
                return
            referee = f"{referee}+{other}" if other else referee
            second = None  # split: nobody is charged, the work is rolled back
        if second is not None and _same(second, answer):
            unit.verdict = "fail"
            self._fault(network, unit.step, f"step {unit.step}, unit {unit.key}: re-execution differs at {where}",
                        unit.host, "fail", referee, session, unit)
        else:
            unit.verdict = "unresolved"
            self._fault(network, unit.step, f"step {unit.step}, unit {unit.key}: host and verifier {verifier} "
                        f"disagree at {where} and " + (f"the referees ({referee}) do not settle it" if referee else
                                                       "no referee is available"),
                        "", "unresolved", referee, session, unit)

    def _referee(self, unit: _Unit, replay: Replay, tried: set[str], same: bool
                 ) -> tuple[str, dict[str, Commitment] | None]:
        """A further verifier (trusted PNodes preferred) and its answer (None when there is none or it failed)."""
        referee = self._choose(unit.host, exclude=tried | {unit.host}, prefer_trusted=True, same_class=same)
        if not referee:
            return "", None
        try:
            return referee, self.fleet.client(referee).verify(replay)
        except DcnrError:
            return referee, None

    def _choose(self, host: str, exclude: set[str], prefer_trusted: bool = False, same_class: bool = True) -> str:
        """A random eligible verifier for `host`'s work ("" when there is none): of its compute class, or with
        `same_class=False` of any other."""
        rec = self._record(host)
        if rec is None:
            return ""
        cls, where = rec.hardware.get("compute_class", ""), rec.hardware.get("peer_host", "")
        eligible = [p for p in self.fleet.alive() if p.id not in exclude and p.id not in self._convicted
                    and not self.standings.quarantined(p.id) and not p.paused
                    and (p.hardware.get("compute_class", "") == cls) == same_class
                    and (_loopback(where) or p.hardware.get("peer_host", "") != where)]
        if prefer_trusted and any(self.standings.trusted(p.id) for p in eligible):
            eligible = [p for p in eligible if self.standings.trusted(p.id)]
        return self._random.choice(eligible).id if eligible else ""

    def _record(self, pnode: str) -> PNodeRecord | None:
        try:
            return self.fleet.store.get_pnode(pnode)
        except DcnrError:
            return None

    # -- verdicts and faults ---------------------------------------------------------------------------
    def _event(self, network: str, session: str, unit: _Unit | None, verdict: str, verifier: str = "",
               referee: str = "", detail: str = "", accused: str = "", step: int = -1) -> None:
        self.standings.record(ValidationEvent(
            network, session, unit.step if unit is not None else step, unit.key if unit is not None else "",
            accused or (unit.host if unit is not None else ""), verifier or (unit.verifier if unit else ""),
            referee, verdict, detail))

    def _fault(self, network: str, step: int, detail: str, culprit: str, verdict: str, referee: str, session: str,
               unit: _Unit | None = None, checkpoint: bool = False) -> None:
        """Record a verdict against `culprit` ("" for nobody), charge it, and note the fault for the session."""
        log.warning("validation of network %s: %s", network, detail, extra={"network": network})
        if unit is not None:
            self._event(network, session, unit, verdict, referee=referee, detail=detail,
                        accused=culprit if verdict == "false-accusation" else "")
        else:
            self._event(network, session, None, verdict, detail=detail, accused=culprit, step=step)
        convicted: tuple[str, ...] = ()
        if culprit:
            with self._lock:
                self._convicted.add(culprit)
            if self.standings.charge(culprit, detail):
                self.fleet.quarantine(culprit)  # its VNodes move; their state is restored by the rollback
            convicted = (culprit,)
        with self._lock:
            tl = self._timelines.get(network)
            if tl is None or (unit is not None and tl.units.get((unit.step, unit.key)) is not unit) or (
                    checkpoint and (step + 1, "checkpoint") not in tl.pending):
                return  # the work it concerns was rolled back already
            since = min([step] + [self._suspect_since(tl, p) for p in convicted])
            if verdict == "false-accusation":  # the accused work was honest: only the liar's own work is suspect
                since = min([self._suspect_since(tl, p) for p in convicted] or [step])
            tl.faults.append(Fault(network, since, detail, convicted))
            self._lock.notify_all()

    def _suspect_since(self, tl: _Timeline, pnode: str) -> int:
        """The earliest step of the timeline in which `pnode` did work nobody else cleared, or vouched for
        another PNode's work (a large number when there is none)."""
        steps = []
        for unit in tl.units.values():
            if unit.host == pnode and not (unit.sampled and unit.verdict == "pass" and unit.verifier
                                           and unit.verifier not in self._convicted):
                steps.append(unit.step)
            if unit.verifier == pnode and unit.verdict == "pass":
                steps.append(unit.step)
        return min(steps, default=1 << 62)

    # -- what sessions ask ---------------------------------------------------------------------------
    def take_faults(self, network: str) -> list[Fault]:
        """Faults found since the last call (the session rolls back from the earliest)."""
        with self._lock:
            tl = self._timeline(network)
            found, tl.faults = tl.faults, []
            return found

    def pending(self, network: str) -> int:
        with self._lock:
            return len(self._timeline(network).pending)

    def wait(self, network: str, timeout: float) -> bool:
        """Until no verification of the network is pending or a fault is found; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            tl = self._timeline(network)
            while tl.pending and not tl.faults:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 1.0))
            return True

    def verified_before(self, network: str, step: int) -> bool:
        """Whether every unit sampled in the timeline before `step` passed (none pending, none failed); a unit
        no other PNode could verify (a fleet of one) does not count against it, and is logged as such."""
        with self._lock:
            tl = self._timeline(network)
            return not any(s < step for s, _ in tl.pending) and not any(
                u.sampled and u.step < step and u.verdict not in ("pass", "unverifiable") for u in tl.units.values())

    def restored(self, network: str, step: int, vnodes: Mapping[str, str]) -> None:
        """The network's state was put back to `step`: `vnodes` maps each VNode to the digest of its state
        now (SEED for the seed's initial parameters, "" when unknown). Work of later steps is forgotten (its
        verdicts still charge a liar); earlier work stays, its faults still to be found."""
        with self._lock:
            tl = self._timeline(network)
            tl.units = {k: u for k, u in tl.units.items() if u.step < step}
            tl.pending = {k for k in tl.pending if k[0] < step}
            tl.faults = [f for f in tl.faults if f.step < step]
            tl.known = dict(vnodes)
            tl.norms.clear()
            self._lock.notify_all()

    def forget_before(self, network: str, step: int) -> None:
        """No state from before `step` is kept any more (checkpoints were deleted): its work is forgotten."""
        with self._lock:
            tl = self._timeline(network)
            tl.units = {k: u for k, u in tl.units.items() if u.step >= step or k in tl.pending}

    def state_digests(self, blobs: Mapping[str, str]) -> dict[str, str]:
        """The state digest of each VNode's checkpoint blob (VNode -> sha256), read from storage."""
        if self.blob_reader is None:
            return {}
        return {vnode: state_digest(load_safetensors(self.blob_reader(digest))) for vnode, digest in blobs.items()}

    def check_checkpoint(self, network: str, step: int, blobs: Mapping[str, str], hosts: Mapping[str, str],
                         session: str = "") -> None:
        """In the background: every blob of a checkpoint at `step` must hold the state its host committed to."""
        with self._lock:
            tl = self._timeline(network)
            expected = dict(tl.known)
            tl.pending.add((step, "checkpoint"))

        def job() -> None:
            try:
                for vnode, digest in sorted(blobs.items()):
                    want = expected.get(vnode, "")
                    if not want or want == SEED or self.blob_reader is None:
                        continue
                    if state_digest(load_safetensors(self.blob_reader(digest))) != want:
                        host = hosts.get(vnode, "")
                        self._fault(network, step - 1, f"step {step}: the checkpoint blob of VNode {vnode!r} written "
                                    f"by PNode {host} is not the state it committed to", host, "fail", "", session,
                                    checkpoint=True)
            except Exception as exc:  # storage trouble: the checkpoint stays unverified
                log.warning("checking the checkpoint of network %s at step %d failed: %s", network, step, exc)
            finally:
                with self._lock:
                    tl = self._timelines.get(network)
                    if tl is not None:
                        tl.pending.discard((step, "checkpoint"))
                    self._lock.notify_all()

        self.pool.submit(job)

    def forget_network(self, network: str) -> None:
        """A network was deleted or redefined: its timeline goes (pending verdicts still charge liars)."""
        with self._lock:
            self._timelines.pop(network, None)
            self._lock.notify_all()

    def forget_state(self, network: str) -> None:
        """The network's state changed without a commitment (a step trained without validation, a state put
        back from outside a session): what was known of it is no longer its state."""
        with self._lock:
            self._timeline(network).known.clear()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.fetch_pool.shutdown(wait=False, cancel_futures=True)


def _origin(router: Router, key: str) -> str | None:
    """The VNode that sends a hop (or reports a value) named by `key`."""
    _, op, vnode, index = parse_hop_key(key)
    if op == "out":
        return vnode
    if op == "fwd":
        edge = router.feeds.get((vnode, index))
        return router.edges[edge].src if edge is not None else None
    return router.edges[index].dst if 0 <= index < len(router.edges) else None


def _tolerance(spec: NetworkSpec, vnodes: Sequence[str]) -> float:
    """How close a verifier of another compute class must come to the host's hops: 1e-4 relative for fp32
    units, 1e-2 for half precision (documented in README, "What validation guarantees")."""
    half = any("16" in p for v in vnodes for p in (spec.nodes[v].param_precision, spec.nodes[v].activation_precision))
    return 1e-2 if half else 1e-4


def _comparable(committed: Mapping[str, Commitment], answer: Mapping[str, Commitment]) -> dict[str, Commitment]:
    """The host's commitments as a verifier of another class answers: the hops it answered for, no state."""
    return {v: Commitment(v, "", {k: d for k, d in c.sent.items() if k in answer.get(v, c).sent})
            for v, c in committed.items()}


def _same(a: Mapping[str, Commitment], b: Mapping[str, Commitment]) -> bool:
    return set(a) == set(b) and all(a[v].state == b[v].state and a[v].sent == b[v].sent for v in a)


def _difference(a: Mapping[str, Commitment], b: Mapping[str, Commitment]) -> str:
    """Where two sets of digests first differ, for people."""
    for v in sorted(set(a) | set(b)):
        if v not in a or v not in b:
            return f"VNode {v!r} missing"
        for key in sorted(set(a[v].sent) | set(b[v].sent)):
            if a[v].sent.get(key) != b[v].sent.get(key):
                return f"hop {key}"
        if a[v].state != b[v].state:
            return f"the state of {v!r} after the update"
    return "nothing"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
