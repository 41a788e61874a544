"""Training sessions: a network trained on a dataset for a number of steps, resumably.

Owns each session's life (created → running ⇄ suspended → completed | failed), the
thread that runs a running session step by step through the driver, and the stream
of step events listeners follow (each step's event is kept in the session's `History`
first, so a listener may start from any step, also after the orchestrator restarted). The
batch of step k is a pure function of (dataset, seed, k), so a suspended or interrupted
session resumes exactly where it stopped.

Under a validation policy (the session's, else its network's) every step is committed
and judged by the `Validator`; a fault rolls the session back to its newest checkpoint
at or before the first step that can no longer be trusted (deleting the later ones),
where the step is trained again without the quarantined PNodes. A session completes
only once every verification of its steps has passed; a checkpoint is marked verified
once every sampled unit before it has.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dcnr.errors import (
    Aborted,
    Conflict,
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StorageFailed,
    Unavailable,
)
from dcnr.orchestrator import checkpoints
from dcnr.orchestrator.checkpoints import Checkpoints
from dcnr.orchestrator.datastore import DataStore
from dcnr.orchestrator.driver import Driver, StepFailed
from dcnr.orchestrator.history import History
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.placement import PlacementError
from dcnr.orchestrator.store import SessionRecord, StateStore
from dcnr.orchestrator.validator import SEED, Fault, Validator
from dcnr.runtime.sampling import lm_interface
from dcnr.validation.policy import Policy

log = logging.getLogger("dcnr.orchestrator")

_T = TypeVar("_T")
FINAL = ("completed", "failed")
# what a dying PNode makes calls raise: retried after restoring a checkpoint (a bug is not among them);
# NotFound and Conflict: a PNode that restarted, or holds a placement that changed meanwhile. StorageFailed
# is not among them: a full disk or a refusing store stays so, and the session fails naming it
RECOVERABLE: tuple[type[BaseException], ...] = (Aborted, ResourceExhausted, Unavailable, DeadlineExceeded, NotFound,
                                                Conflict, ConnectionError)
# what a recovery retries besides: a PNode refused storage for a VNode that moved away between placing and loading
RETRIED: tuple[type[BaseException], ...] = (*RECOVERABLE, PermissionDenied)
EVENT_MEMORY = 100_000  # step events kept per session for listeners that join late


@dataclass
class _Live:
    events: list[dict[str, Any]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    deleted: bool = False


class Sessions:
    def __init__(self, store: StateStore, driver: Driver, data: DataStore, checkpoints: Checkpoints,
                 recovery_timeout: float = 600.0, limits: Limits | None = None, history: History | None = None) -> None:
        self.store = store
        self.history = history or History(store)
        self.limits = limits or Limits()
        self.driver = driver
        self.data = data
        self.checkpoints = checkpoints
        self.recovery_timeout = recovery_timeout
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def resume_interrupted(self) -> list[str]:
        """Sessions left running by an orchestrator that crashed: start them again from their last checkpoint."""
        ids = [rec.id for rec in self.store.list_sessions() if rec.state == "running"]
        for sid in ids:
            self.start(sid)
        return ids

    def _state(self, session_id: str) -> _Live:
        with self._lock:
            return self._live.setdefault(session_id, _Live())

    def create(self, network: str, dataset: str, steps: int, batch_size: int, micro_batches: int, seed: int,
               checkpoint_every: int = 0, validation: str = "") -> SessionRecord:
        """A new session; `validation` is its policy (off, sample:P, full; "": the network's default)."""
        self.limits.check("max_micro_batches", micro_batches, f"micro_batches {micro_batches}")  # before any work
        self.limits.check("max_batch_size", batch_size, f"batch_size {batch_size}")
        try:
            validation = str(Policy.parse(validation)) if validation else ""
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        spec = self.driver.network(network).spec  # NotFound for an unknown network
        ds = self.data.dataset(dataset)  # NotFound for an unknown dataset
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        micro_batches = micro_batches or 1
        if batch_size < 1 or batch_size % micro_batches:
            raise ValueError(f"batch size {batch_size} must be a positive multiple of micro-batches {micro_batches}")
        names = {b.name for b in spec.inputs}
        if not {"tokens", "targets"} <= names:
            raise ValueError(f"network {network!r}: a training session feeds inputs 'tokens' and 'targets' from the "
                             f"dataset; this network takes {', '.join(map(repr, sorted(names)))}")
        if not spec.costs:
            raise ValueError(f"network {network!r} has no costs to train")
        _, _, seq_len = lm_interface(spec)
        vocab_size = self.data.tokenizer(self.data.get_dataset(dataset)["vocabulary"]).get_vocab_size()
        embed = next(spec.nodes[b.node_id] for b in spec.inputs if b.name == "tokens")
        want = getattr(embed.impl.cfg, "vocab_size", vocab_size)
        if vocab_size > want:
            raise ValueError(f"dataset {dataset!r} uses a vocabulary of {vocab_size} tokens; network {network!r} "
                             f"embeds only {want}")
        ds.batch(seed, 0, 1, seq_len)  # the train split must hold one window (ValueError otherwise)
        rec = SessionRecord(uuid.uuid4().hex[:12], network, dataset, steps, batch_size, micro_batches, seed,
                            checkpoint_every, validation=validation)
        self.store.put_session(rec)
        log.info("session %s created: %s on %s, %d steps", rec.id, network, dataset, steps,
                 extra={"session": rec.id, "network": network})
        return rec

    def list(self) -> list[SessionRecord]:
        return self.store.list_sessions()

    def start(self, session_id: str) -> SessionRecord:
        """Start a created session, or resume a suspended one (a running one is left running)."""
        with self._lock:
            rec = self.store.get_session(session_id)
            if rec.state in FINAL:
                raise Conflict(f"session {session_id} is {rec.state}; create a new session to train further")
            live = self._live.setdefault(session_id, _Live())
            if live.thread is not None and live.thread.is_alive():
                live.stop.clear()  # a suspend that has not taken effect yet is cancelled
                return rec
            rec.state = "running"
            self.store.put_session(rec)
            live.stop.clear()
            live.thread = threading.Thread(target=self._run, args=(session_id, live), name=f"session-{session_id}",
                                           daemon=True)
            live.thread.start()
        return rec

    def suspend(self, session_id: str, wait: float = 0.0) -> SessionRecord:
        """Stop after the current step; the session can be resumed with `start`."""
        rec = self.store.get_session(session_id)
        if rec.state in FINAL:
            raise Conflict(f"session {session_id} is already {rec.state}")
        live = self._state(session_id)
        live.stop.set()
        if live.thread is not None and wait:
            live.thread.join(wait)
        if live.thread is None or not live.thread.is_alive():
            rec = self.store.get_session(session_id)
            if rec.state == "created" or rec.state == "running":
                rec.state = "suspended"
                self.store.put_session(rec)
        return self.store.get_session(session_id)

    def delete(self, session_id: str) -> bool:
        self.store.get_session(session_id)  # NotFound for an unknown id
        live = self._state(session_id)
        live.stop.set()
        live.deleted = True
        if live.thread is not None:
            live.thread.join(self.driver.timeout)
        with live.cond:
            live.cond.notify_all()
        with self._lock:
            self._live.pop(session_id, None)
        deleted = self.store.delete_session(session_id)  # its step events go with it
        self.history.forget(session_id)
        if self.driver.timelines is not None:
            self.driver.timelines.forget(session_id)
        return deleted

    def listen(self, session_id: str, active: Any = lambda: True, from_step: int | None = None
               ) -> Iterator[dict[str, Any]]:
        """Step events as they happen, until the session ends. With `from_step`, the session's kept history
        from that step on comes first (also what ran before the orchestrator restarted); without, the events
        since the first one this orchestrator saw."""
        self.store.get_session(session_id)
        live = self._state(session_id)
        sent = 0
        if from_step is not None:
            with live.cond:  # nothing is recorded meanwhile: every later event is in `live.events` past `sent`
                sent = len(live.events)
                kept = self.history.steps(session_id, from_step)
            for ev in kept:
                yield ev
                if ev["state"] in FINAL:
                    return
            rec = self.store.get_session(session_id)
            with live.cond:
                over = rec.state in FINAL and len(live.events) == sent
            if over:  # ended before this orchestrator started (or the history lacks its end): say how
                yield self._status_event(rec)
                return
        while active():
            with live.cond:
                while sent >= len(live.events) and not live.deleted:
                    try:
                        state = self.store.get_session(session_id).state
                    except NotFound:
                        return
                    if state in FINAL:
                        return
                    live.cond.wait(0.5)
                    if not active():
                        return
                if sent >= len(live.events):
                    return  # deleted
                batch = live.events[sent:]
            for ev in batch:
                sent += 1
                yield ev
                if ev["state"] in FINAL:
                    return

    def _emit(self, live: _Live, event: dict[str, Any], step: bool = False) -> None:
        """Hand an event to listeners; a finished step's event (`step`) is kept in the history first."""
        with live.cond:
            if step:
                event = self.history.record_step(event)
            live.events.append(event)
            if len(live.events) > EVENT_MEMORY:
                del live.events[: len(live.events) - EVENT_MEMORY]
            live.cond.notify_all()

    def _validator(self, rec: SessionRecord) -> Validator | None:
        """The validator judging this session's steps, if its policy validates anything."""
        policy = Policy.parse(rec.validation or self.driver.network(rec.network).spec.validation)
        return self.driver.validator if policy.mode != "off" else None

    def _run(self, session_id: str, live: _Live) -> None:
        rec = self.store.get_session(session_id)
        try:
            spec = self.driver.network(rec.network).spec
            policy = Policy.parse(rec.validation or spec.validation)
            validator = self._validator(rec)
            _, _, seq_len = lm_interface(spec)
            ds = self.data.dataset(rec.dataset)
            with contextlib.suppress(PlacementError):  # no PNodes yet after a restart: recovery waits for them
                self.driver.fleet.placement(spec, batch_size=rec.batch_size // rec.micro_batches)  # sized as trained
            if self.checkpoints.latest(rec.network, session=rec.id) is None:
                self._first_checkpoint(rec, live)  # the point every failure before the next checkpoint returns to
            else:
                rec = self._recover(rec, live, "resuming")  # PNode state may be gone: start from storage
            while rec.step < rec.steps and not live.stop.is_set():
                started = time.perf_counter()
                x, y = ds.batch(rec.seed, rec.step, rec.batch_size, seq_len)
                try:
                    costs, _, skipped, lrs = self.driver.train_step(
                        rec.network, {"tokens": x, "targets": y}, rec.micro_batches, run_prefix=f"session-{rec.id}",
                        validation=policy, session=rec.id, session_step=rec.step + 1)
                except StepFailed as exc:
                    log.warning("session %s: step %d failed (%s); restoring the last checkpoint", rec.id, rec.step,
                                exc, extra={"session": rec.id})
                    rec = self._recover(rec, live, "recovering")
                    continue
                duration = time.perf_counter() - started
                if live.deleted:
                    return
                rec.step += 1
                done = rec.step >= rec.steps
                if validator is not None and (faults := validator.take_faults(rec.network)):
                    rec = self._roll_back(rec, live, faults)
                    continue
                if done or (rec.checkpoint_every and rec.step % rec.checkpoint_every == 0):
                    placed = self.store.placements(rec.network)
                    try:
                        self._checkpoint(rec, validator)
                    except StorageFailed as exc:
                        raise StorageFailed(f"could not write the checkpoint at step {rec.step}: {exc}") from None
                    except PermissionDenied as exc:  # refused storage: the VNode moved away meanwhile (quarantine)?
                        if self.store.placements(rec.network) == placed:
                            raise
                        log.warning("session %s: checkpoint at step %d failed as VNodes moved (%s); restoring the "
                                    "last one", rec.id, rec.step, _describe(exc), extra={"session": rec.id})
                        rec = self._recover(rec, live, "recovering")
                        continue
                    except RECOVERABLE as exc:  # a PNode died while writing: back to the last whole checkpoint
                        log.warning("session %s: checkpoint at step %d failed (%s); restoring the last one",
                                    rec.id, rec.step, _describe(exc), extra={"session": rec.id})
                        rec = self._recover(rec, live, "recovering")
                        continue
                if done and validator is not None:  # the last steps' verifications decide whether it is done
                    validator.wait(rec.network, self.driver.timeout)
                    faults = validator.take_faults(rec.network)
                    if faults:
                        rec = self._roll_back(rec, live, faults)
                        continue
                if validator is not None:
                    self._mark_verified(rec, validator)
                if done:
                    rec.state = "completed"
                self.store.put_session(rec)
                self._emit(live, {"session": rec.id, "step": rec.step, "steps": rec.steps,
                                  "loss": next(iter(costs.values())), "costs": costs,
                                  "tokens_per_second": rec.batch_size * seq_len / duration,
                                  "learning_rates": lrs, "duration_seconds": duration, "skipped": skipped,
                                  "state": rec.state, "error": "", "network": rec.network}, step=True)
            if live.deleted:
                return
            if rec.state != "completed":
                self._checkpoint(rec, validator)  # suspend: resume starts exactly here
                rec = self.store.get_session(session_id)
                rec.state = "suspended"
                self.store.put_session(rec)
                self._emit(live, self._status_event(rec))
            log.info("session %s %s at step %d", rec.id, rec.state, rec.step, extra={"session": rec.id})
        except Exception as exc:  # the session fails with a clear reason; the orchestrator goes on
            if live.deleted:
                return
            try:
                rec = self.store.get_session(session_id)
            except NotFound:
                return
            rec.state, rec.error = "failed", str(exc)
            self.store.put_session(rec)
            self._emit(live, self._status_event(rec))
            log.warning("session %s failed at step %d: %s", rec.id, rec.step, exc, extra={"session": rec.id})

    def _checkpoint(self, rec: SessionRecord, validator: Validator | None = None) -> dict[str, Any]:
        """Write every VNode's state with the session's position; returns the manifest. Under validation each
        blob is then checked against what its PNode committed to (in the background)."""
        net = self.driver.network(rec.network)
        started = time.perf_counter()
        from_seed = self._from_seed(rec.network)
        blobs = {} if from_seed else checkpoints.save_to_storage(self.driver, net)
        manifest = self.checkpoints.write_manifest(net.spec, net.yaml, net.step, blobs, {
            "session": rec.id, "session_step": rec.step, "steps": rec.steps, "seed": rec.seed,
            "network_seed": net.spec.seed, "dataset": rec.dataset,
            "dataset_sha256": self.data.get_dataset(rec.dataset)["sha256"],
            "batch_size": rec.batch_size, "micro_batches": rec.micro_batches,
            "loss_scale": net.scaler.scale, "good_steps": net.scaler.good_steps},
            origin=checkpoints.SEED_ORIGIN if from_seed else "blobs")
        manifest["write_seconds"] = time.perf_counter() - started
        if validator is not None and blobs:
            validator.check_checkpoint(rec.network, net.step, {v: d for v, (d, _) in blobs.items()},
                                       self.store.placements(rec.network), rec.id)
        log.info("session %s: checkpoint at step %d (%d bytes, %.2f s)", rec.id, rec.step, manifest["bytes"],
                 manifest["write_seconds"], extra={"session": rec.id})
        try:
            self.checkpoints.retain(rec.network, rec.id)
        except StorageFailed as exc:  # the new checkpoint is whole: older ones stay until they can be deleted
            log.warning("session %s: old checkpoints not deleted: %s", rec.id, exc, extra={"session": rec.id})
        if validator is not None:  # no rollback reaches before the oldest checkpoint left: its work is history
            oldest = min((int(m["step"]) for m in self.checkpoints.list(rec.network) if m.get("session") == rec.id),
                         default=0)
            validator.forget_before(rec.network, oldest)
        return manifest

    def _mark_verified(self, rec: SessionRecord, validator: Validator) -> None:
        """Mark the session's checkpoints before which every sampled unit passed."""
        done = self.checkpoints.verified(rec.network)
        for m in self.checkpoints.list(rec.network):
            step = int(m["step"])
            if m.get("session") == rec.id and step not in done and validator.verified_before(rec.network, step):
                self.checkpoints.mark_verified(rec.network, step)

    def _roll_back(self, rec: SessionRecord, live: _Live, faults: Sequence[Fault]) -> SessionRecord:
        """Back to the session's newest checkpoint at or before the earliest step the faults put in doubt; the
        session's later checkpoints hold doubtful work and are deleted."""
        target = min(f.step for f in faults)
        mine = [m for m in self.checkpoints.list(rec.network) if m.get("session") == rec.id]
        before = [m for m in mine if int(m["step"]) <= target]
        if not mine:
            raise LostState(f"session {rec.id}: validation found a fault ({faults[0].detail}) and no checkpoint is "
                            "left to roll back to")
        if not before:
            log.warning("session %s: work from step %d on is in doubt, but older checkpoints were deleted "
                        "(--keep-checkpoints): rolling back only to step %s", rec.id, target, mine[0]["step"],
                        extra={"session": rec.id})
            before = mine[:1]
        chosen = int(before[-1]["step"])
        for m in mine:
            if int(m["step"]) > chosen:
                self.checkpoints.discard(rec.network, int(m["step"]))
        log.warning("session %s: rolling back to the checkpoint at step %d (%s)", rec.id,
                    int(before[-1]["session_step"]), "; ".join(f.detail for f in faults[:3]),
                    extra={"session": rec.id})
        return self._recover(rec, live, "rolled back")

    def _from_seed(self, network: str) -> bool:
        return self.checkpoints.from_seed(network, self.driver.network(network).step)

    def _retrying(self, rec: SessionRecord, live: _Live, what: str, attempt: Callable[[bool], _T]) -> _T:
        """`attempt(again)` until it returns, backing off while PNodes die, are declared dead or come back;
        gives up with StepFailed when the session is stopped or the recovery time runs out."""
        deadline = time.monotonic() + self.recovery_timeout
        delay, again = 0.2, False
        while True:
            try:
                return attempt(again)
            except RETRIED as exc:
                if live.stop.is_set() or live.deleted or time.monotonic() > deadline:
                    raise StepFailed(f"session {rec.id}: could not {what}: {_describe(exc)}") from None
                log.info("session %s: could not %s yet (%s); retrying", rec.id, what, _describe(exc),
                         extra={"session": rec.id})
            time.sleep(delay)
            delay, again = min(2.0, delay * 1.5), True

    def _first_checkpoint(self, rec: SessionRecord, live: _Live) -> None:
        """The session's first checkpoint. A PNode lost before it is written costs nothing when the lost
        state is known anyway: initial parameters (network never trained), or a checkpoint at this very step."""
        net = self.driver.network(rec.network)

        def attempt(again: bool) -> None:
            self.driver.fleet.sweep()
            if again:  # a PNode was lost: put the state back where the live PNodes now place it
                known = self.checkpoints.latest(rec.network, at_most=net.step)
                if known is not None and int(known["step"]) == net.step:
                    with net.lock:
                        checkpoints.restore_manifest(self.driver, net, known)
                elif self._from_seed(rec.network):  # untrained: VNodes placed anew are built from the same seed
                    with net.lock:
                        checkpoints.reset(self.driver, net, 0, reinitialize=True)
                else:
                    raise LostState(f"session {rec.id}: network {rec.network!r} lost its state of step {net.step} "
                                    "before any checkpoint held it")
            self._restored(rec, self._checkpoint(rec))

        self._retrying(rec, live, "write its first checkpoint", attempt)

    def _recover(self, rec: SessionRecord, live: _Live, why: str) -> SessionRecord:
        """Put every VNode back to the session's last checkpoint, wherever the live PNodes now place it."""
        manifest = self.checkpoints.latest(rec.network, session=rec.id)
        if manifest is None:
            raise StepFailed(f"session {rec.id} has no checkpoint to recover from")
        net = self.driver.network(rec.network)

        def attempt(again: bool) -> None:
            self.driver.fleet.sweep()
            with net.lock:
                try:
                    checkpoints.restore_manifest(self.driver, net, manifest)
                except StorageFailed as exc:
                    raise StorageFailed(f"could not restore the checkpoint at step {manifest['session_step']}: "
                                        f"{exc}") from None
                self.driver.reset(rec.network, int(manifest["step"]), float(manifest.get("loss_scale", 0.0)),
                                  int(manifest.get("good_steps", 0)))
            self._restored(rec, manifest)

        self._retrying(rec, live, f"restore the checkpoint at step {manifest['session_step']}", attempt)
        rec.step = int(manifest["session_step"])
        self.store.put_session(rec)
        self.history.rewound(rec.id, rec.step)
        log.info("session %s: %s from the checkpoint at step %d", rec.id, why, rec.step, extra={"session": rec.id})
        return rec

    def _restored(self, rec: SessionRecord, manifest: dict[str, Any]) -> None:
        """Tell the validator what the network's state is now: a manifest's (read back from storage)."""
        validator = self._validator(rec)
        if validator is None:
            return
        spec = self.driver.network(rec.network).spec
        known = (dict.fromkeys(spec.nodes, SEED) if manifest.get("origin") == checkpoints.SEED_ORIGIN
                 else validator.state_digests(manifest["vnodes"]))
        validator.restored(rec.network, int(manifest["step"]), known)

    @staticmethod
    def _status_event(rec: SessionRecord) -> dict[str, Any]:
        return {"session": rec.id, "step": rec.step, "steps": rec.steps, "loss": float("nan"), "costs": {},
                "tokens_per_second": 0.0, "learning_rates": {}, "duration_seconds": 0.0, "skipped": False,
                "state": rec.state, "error": rec.error}


class LostState(DataLoss):
    """State no checkpoint holds was lost with a PNode: the session cannot go on (not retried)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
