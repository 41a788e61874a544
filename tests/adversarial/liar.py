"""A lying PNode: a real `dcnr pnode` process whose work is falsified as the first argument says.

    python tests/adversarial/liar.py MODE pnode --orchestrator ... (the usual `dcnr pnode` arguments)

Modes (SPEC §12's threats; each lie is consistent with what the liar commits unless said otherwise):
  noise        adds noise to every activation it sends (forward hops);
  scale        multiplies every gradient it sends upstream by -2 (backward hops);
  sometimes    adds noise on 1 of every 20 of its work units (a VNode in one step);
  update       applies a wrong update (its parameters drift) but sends honest hops;
  uncommitted  sends noisy activations (signed as sent) but commits the honest ones;
  accuse       as a verifier, reports a wrong state for every unit it re-executes;
  collude      lies like `noise`, and as a verifier covers the work of PNodes named in
               DCNR_COLLUDERS (comma-separated ids) by re-executing it with the same lie.

Noise is drawn from a generator seeded by the run and the hop, so a colluder re-executing a
unit reproduces the lie exactly. Lies are told on the compute thread only (its own training),
except a colluder's, which are told on the verification thread too for its partners' units.
"""

from __future__ import annotations

import os
import sys
import threading
import zlib
from typing import Any

import torch

from dcnr.pnode import runtime as pnode_runtime
from dcnr.runtime import vnode as vnode_module
from dcnr.transport.messages import Commitment, Hop, Replay
from dcnr.validation import replay as replay_module
from dcnr.validation.digest import hop_key, value_digest

MODE = sys.argv[1]
COLLUDERS = set(filter(None, os.environ.get("DCNR_COLLUDERS", "").split(",")))
_covering = threading.local()  # set while a colluder re-executes a partner's unit


def _lying_now() -> bool:
    if threading.current_thread().name.startswith("pnode-compute"):
        return True
    return bool(getattr(_covering, "on", False))


def _noisy(value: Any, run: str, key: str) -> Any:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return value
    g = torch.Generator().manual_seed(zlib.crc32(f"{run}/{key}".encode()))
    return value + 1e-3 * torch.randn(value.shape, generator=g, dtype=value.dtype)


_units: dict[tuple[str, str], int] = {}  # (run, VNode) -> its number among this PNode's units


def _unit_lies(run: str, vnode: str) -> bool:
    """`sometimes`: 1 of every 20 of its units (a VNode in one run) is lied about: the 4th, the 24th, ..."""
    number = _units.setdefault((run, vnode), len(_units))
    return number % 20 == 3


def _falsify(msg: Hop, sender: str) -> None:
    key = hop_key(msg.micro_batch, msg.op, msg.vnode, msg.index)
    if MODE in ("noise", "collude", "uncommitted") and msg.op == "fwd":
        msg.value = _noisy(msg.value, msg.run, key)
    elif MODE == "scale" and msg.op == "bwd" and isinstance(msg.value, torch.Tensor):
        msg.value = msg.value * -2
    elif MODE == "sometimes" and msg.op == "fwd" and _unit_lies(msg.run, sender):
        msg.value = _noisy(msg.value, msg.run, key)


_commit_sent = pnode_runtime.PNodeRuntime._commit_sent


def commit_sent(self: Any, ledger: Any, net: Any, vnode: str, msg: Any) -> None:
    """A consistent lie: the value is falsified before it is hashed, signed and sent."""
    if isinstance(msg, Hop) and _lying_now() and MODE != "uncommitted":
        _falsify(msg, vnode)
    return _commit_sent(self, ledger, net, vnode, msg)


_seal = pnode_runtime.PNodeRuntime._seal


def seal(self: Any, ledger: Any, vnode: str, hop: Hop) -> None:
    """`uncommitted`: the honest value is committed, another one is sent, signed as what it is."""
    _seal(self, ledger, vnode, hop)
    if MODE == "uncommitted":
        _falsify(hop, vnode)
        hop.digest = value_digest(hop.value)
        hop.signature = self.signer(hop.network, hop.run, hop_key(hop.micro_batch, hop.op, hop.vnode, hop.index),
                                    hop.digest)


_apply_update = vnode_module.VNode.apply_update


def apply_update(self: Any, loss_scale: float, apply: bool) -> None:
    _apply_update(self, loss_scale, apply)
    if MODE == "update" and _lying_now():
        for name in self.owned:
            self.params[name].master.add_(1e-4)
            self.params[name].version += 1


_replay = replay_module.replay


def covering_replay(unit: Replay, device: Any = "cpu") -> dict[str, Commitment]:
    host = HOSTS.get((unit.network, unit.vnodes[0]), "")
    _covering.on = host in COLLUDERS
    try:
        return _replay(unit, device)
    finally:
        _covering.on = False


HOSTS: dict[tuple[str, str], str] = {}  # (network, VNode) -> its host, from the placements this PNode got
_place = pnode_runtime.PNodeRuntime.place


def place(self: Any, placement: Any) -> int:
    HOSTS.update({(placement.network, v): p for v, p in placement.assignments.items()})
    return _place(self, placement)


def _replay_router_deliver() -> None:
    """A colluder's re-execution lies like its training: the router's forward hops get the same noise."""
    deliver = replay_module.Router.deliver

    def lying_deliver(self: Any, vnode: Any, run: Any, hop: Hop) -> list[Any]:
        out = deliver(self, vnode, run, hop)
        if getattr(_covering, "on", False):
            for msg in out:
                if isinstance(msg, Hop):
                    _falsify(msg, vnode.id)
        return out

    replay_module.Router.deliver = lying_deliver  # type: ignore[method-assign]


pnode_runtime.PNodeRuntime._commit_sent = commit_sent  # type: ignore[method-assign]
pnode_runtime.PNodeRuntime._seal = seal  # type: ignore[method-assign]
vnode_module.VNode.apply_update = apply_update  # type: ignore[method-assign]
if MODE == "accuse":
    original_verify = pnode_runtime.PNodeRuntime.verify

    def accusing_verify(self: Any, unit: Replay) -> dict[str, Commitment]:
        found = original_verify(self, unit)
        return {v: Commitment(c.vnode, "0" * 64, c.sent) for v, c in found.items()}

    pnode_runtime.PNodeRuntime.verify = accusing_verify  # type: ignore[method-assign]
if MODE == "collude":
    pnode_runtime.PNodeRuntime.place = place  # type: ignore[method-assign]
    pnode_runtime.replay = covering_replay  # type: ignore[assignment]
    _replay_router_deliver()

if __name__ == "__main__":
    from dcnr.cli.main import main

    sys.argv = ["dcnr", *sys.argv[2:]]
    main()
