"""A network's step has one owner per process: every VNode reads the same clock."""

from __future__ import annotations

import torch
import yaml

import dcnr
from dcnr.pnode.host import VNodeHost
from dcnr.spec.transformer import transformer_lm

SPEC = dcnr.parse_network(yaml.safe_dump(transformer_lm("clock", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6,
                                                       vocab_size=30, dropout=0.0)))


def test_the_executor_owns_the_step_and_every_vnode_reads_it() -> None:
    ex = dcnr.LocalExecutor(SPEC)
    assert {id(v.clock) for v in ex.vnodes.values()} == {id(ex.clock)}
    tokens = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    ex.train_step({"tokens": tokens, "targets": tokens})
    ex.train_step({"tokens": tokens, "targets": tokens})
    assert ex.step == 2 and {v.step for v in ex.vnodes.values()} == {2}
    ex.step = 7  # one assignment moves every VNode (a restore)
    assert {v.step for v in ex.vnodes.values()} == {7}


def test_a_pnode_host_has_one_clock_per_network_for_vnodes_built_at_any_time() -> None:
    host = VNodeHost()
    host.add_network(SPEC)
    early = host.vnode("clock", "embedder")
    host.set_step("clock", 5)
    late = host.vnode("clock", "b0_ln1")  # built after the step moved
    assert early.step == late.step == 5 and early.clock is late.clock is host.clock("clock")
    late.load_state({f"param/{p}": t for p, t in ((n, late.params[n].master) for n in late.owned)}, 9)
    assert host.step("clock") == 9 and early.step == 9
