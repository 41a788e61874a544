"""SPEC §6 optimization passes: what `plan` fuses, what it leaves alone, and `fuse: false`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import yaml

import dcnr
from dcnr.spec.passes import ExecutionPlan, plan
from dcnr.spec.transformer import transformer_lm

HEADS, HEAD_DIM, DIM, SEQ = 3, 4, 8, 5
HEAD = {"head_dim": HEAD_DIM, "input_dim": DIM, "seq_len": SEQ, "lr": 0.01}


def attention_doc(order: list[int] | None = None) -> dict[str, Any]:
    """x -> broadcast -> 3 attention_heads -> stack -> mse cost; head i feeds stack slot order[i]."""
    order = order or list(range(HEADS))
    return {
        "name": "attn",
        "nodes": [
            {"id": "split", "type": "broadcast", "config": {"num_outputs": HEADS}},
            *({"id": f"h{i}", "type": "attention_head", "config": dict(HEAD)} for i in range(HEADS)),
            {"id": "cat", "type": "stack", "config": {}},
            {"id": "loss", "type": "cost", "config": {"cost_function": "mse"}},
        ],
        "edges": [
            *({"from": "split", "to": f"h{i}", "from_slot": i} for i in range(HEADS)),
            *({"from": f"h{i}", "to": "cat", "to_slot": order[i]} for i in range(HEADS)),
            {"from": "cat", "to": "loss"},
        ],
        "inputs": [{"name": "x", "node_id": "split", "slot_id": 0}, {"name": "y", "node_id": "loss", "slot_id": 1}],
        "outputs": [{"name": "out", "node_id": "cat"}],
        "costs": [{"name": "mse", "node_id": "loss"}],
    }


def lm_doc(**lm_head: Any) -> dict[str, Any]:
    """A small §13 transformer (1 block, 2 heads); `lm_head` config keys overridden."""
    doc = transformer_lm("lm", blocks=1, heads=2, head_dim=4, dim=8, seq_len=SEQ, vocab_size=20,
                         ffn_dim=16, head_hidden=16, dropout=0.0)
    for node in doc["nodes"]:
        if node["id"] == "lm_head":
            node["config"].update(lm_head)
    return doc


def planned(doc: dict[str, Any]) -> ExecutionPlan:
    return plan(dcnr.parse_network(yaml.safe_dump(doc)))


def types(p: ExecutionPlan) -> dict[str, str]:
    return {nid: n.type for nid, n in p.spec.nodes.items()}


def test_heads_become_one_attention_node_in_stack_slot_order() -> None:
    """broadcast -> heads -> stack becomes one `attention` VNode under the stack's id, without an
    output projection, whose rows are the heads in the order the stack concatenates them."""
    p = planned(attention_doc(order=[2, 0, 1]))  # h0 -> slot 2, h1 -> slot 0, h2 -> slot 1
    assert types(p) == {"cat": "attention", "loss": "cost"}
    cfg = p.spec.nodes["cat"].impl.cfg
    assert (cfg.num_heads, cfg.head_dim, cfg.dim, cfg.output_projection, cfg.lr) == (HEADS, HEAD_DIM, DIM, False, 0.01)
    fused, stack = p.spec.nodes["cat"], p.written.nodes["cat"]
    assert fused.output_shapes == stack.output_shapes  # as inferred for the stack (no shapes declared)
    assert [s.dims for s in fused.symbolic_outputs if s is not None] == [("S", HEADS * HEAD_DIM)]
    assert [b.node_id for b in p.spec.inputs] == ["cat", "loss"]  # the network input moved to the fused node
    parts = p.param_parts("cat", "k.weight")
    assert parts is not None
    assert [(q.node, q.param, q.start, q.stop) for q in parts] == [
        ("h1", "k.weight", 0, 4), ("h2", "k.weight", 4, 8), ("h0", "k.weight", 8, 12)]
    assert p.fused["cat"] == ("split", "h1", "h2", "h0", "cat")


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1]])
def test_fused_attention_computes_what_the_written_graph_does(order: list[int]) -> None:
    """Same parameters, same outputs, loss and gradients per written parameter (fp32 tolerance)."""
    fused_doc, plain_doc = attention_doc(order), attention_doc(order)
    plain_doc["fuse"] = False
    fused = dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(fused_doc)))
    plain = dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(plain_doc)))
    assert "h0" in plain.vnodes and "h0" not in fused.vnodes
    want_params = plain.parameters()
    got_params = fused.parameters()
    assert got_params.keys() == want_params.keys()
    for key in want_params:  # initial values depend on (seed, written node, param) only
        assert torch.equal(got_params[key], want_params[key]), key
    gen = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(2, SEQ, DIM, generator=gen), "y": torch.randn(2, SEQ, HEADS * HEAD_DIM, generator=gen)}
    torch.testing.assert_close(fused.forward({"x": batch["x"]})["out"], plain.forward({"x": batch["x"]})["out"])
    got, want = fused.train_step(batch, update=False)["mse"], plain.train_step(batch, update=False)["mse"]
    assert got == pytest.approx(want, rel=1e-6)
    want_grads = plain.gradients()
    for key, g in fused.gradients().items():
        assert float(want_grads[key].norm()) > 0, key
        torch.testing.assert_close(g, want_grads[key], rtol=1e-5, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")


def test_tied_lm_head_and_ce_cost_become_tied_lm_head_ce() -> None:
    """The cost becomes `tied_lm_head_ce` fed by the linear's input; the linear stays (not trained
    through) because it is also the `logits` output and carries a learning-rate metric."""
    p = planned(lm_doc())
    node = p.spec.nodes["loss"]
    assert node.type == "tied_lm_head_ce"
    assert node.impl.tied() == {"weight": "token_embedding"}
    assert [(e.src, e.dst_slot) for e in p.spec.in_edges("loss")] == [("head_down", 0)]
    assert p.spec.nodes["lm_head"].type == "linear" and not p.spec.out_edges("lm_head")
    assert p.fused["loss"] == ("lm_head", "loss")


def test_a_tied_lm_head_nothing_else_uses_is_removed() -> None:
    doc = lm_doc()
    doc["outputs"], doc["metrics"] = [], []
    assert "lm_head" not in planned(doc).spec.nodes


def test_fuse_false_runs_the_written_graph_and_the_written_spec_is_never_changed() -> None:
    doc = lm_doc()
    written = dcnr.parse_network(yaml.safe_dump(doc))
    before = (dict(written.nodes), written.edges, written.inputs, written.source)
    fused = plan(written)
    assert fused.spec is not written and fused.written is written
    assert (dict(written.nodes), written.edges, written.inputs, written.source) == before
    doc["fuse"] = False
    off = plan(dcnr.parse_network(yaml.safe_dump(doc)))
    assert off.spec is off.written and not off.fused


def test_fuse_must_be_a_boolean() -> None:
    doc = lm_doc()
    doc["fuse"] = "sometimes"
    with pytest.raises(dcnr.NetworkError, match="fuse: expected true or false, got 'sometimes'"):
        dcnr.parse_network(yaml.safe_dump(doc))


def _edit_node(doc: dict[str, Any], nid: str, **config: Any) -> None:
    next(n for n in doc["nodes"] if n["id"] == nid)["config"].update(config)


def _extra_consumer(doc: dict[str, Any]) -> None:  # the broadcast also feeds a relu
    _edit_node(doc, "split", num_outputs=HEADS + 1)
    doc["nodes"].append({"id": "side", "type": "relu"})
    doc["edges"].append({"from": "split", "to": "side", "from_slot": HEADS})


def _head_output_used_twice(doc: dict[str, Any]) -> None:
    doc["outputs"].append({"name": "h0", "node_id": "h0"})


def _dropout_between(doc: dict[str, Any]) -> None:
    doc["nodes"].append({"id": "drop", "type": "dropout", "config": {"rate": 0.1}})
    edge = next(e for e in doc["edges"] if e["from"] == "h0")
    doc["edges"].append({"from": "drop", "to": "cat", "to_slot": edge["to_slot"]})
    edge["to"], edge["to_slot"] = "drop", 0


def _stack_axis_zero(doc: dict[str, Any]) -> None:
    _edit_node(doc, "cat", axis=0)  # [3·seq, head_dim]: a valid network, not multi-head attention


def _metric_on_a_head(doc: dict[str, Any]) -> None:
    doc["metrics"] = [{"name": "lr", "type": "learning_rate", "node_id": "h1"}]


def _stack_takes_more(doc: dict[str, Any]) -> None:
    doc["nodes"].append({"id": "side", "type": "relu"})
    doc["edges"].append({"from": "side", "to": "cat", "to_slot": HEADS})
    doc["inputs"].append({"name": "z", "node_id": "side"})


ATTENTION_LEFT_ALONE: dict[str, Callable[[dict[str, Any]], None]] = {
    "different rope theta": lambda d: _edit_node(d, "h1", rope_theta=500.0),
    "one head without rope": lambda d: _edit_node(d, "h2", position_encoding="none"),
    "one head not causal": lambda d: _edit_node(d, "h0", causal=False),
    "different learning rate": lambda d: _edit_node(d, "h0", lr=0.5),
    "one head in fp16": lambda d: _edit_node(d, "h0", precision="fp16"),
    "broadcast in another colocate group": lambda d: _edit_node(d, "split", colocate_group="g"),
    "extra consumer of the broadcast": _extra_consumer,
    "head output also a network output": _head_output_used_twice,
    "dropout between head and stack": _dropout_between,
    "stack along axis 0": _stack_axis_zero,
    "metric on a head": _metric_on_a_head,
    "stack concatenates something else too": _stack_takes_more,
}


@pytest.mark.parametrize("case", list(ATTENTION_LEFT_ALONE))
def test_attention_patterns_not_fully_recognised_are_left_alone(case: str) -> None:
    doc = copy.deepcopy(attention_doc())
    if case == "stack along axis 0":
        doc["costs"], doc["edges"] = [], [e for e in doc["edges"] if e["to"] != "loss"]
        doc["nodes"] = [n for n in doc["nodes"] if n["id"] != "loss"]
        doc["inputs"] = doc["inputs"][:1]
    ATTENTION_LEFT_ALONE[case](doc)
    p = planned(doc)
    assert "attention" not in types(p).values()
    assert not p.fused and p.spec is p.written


def _logits_used_twice(doc: dict[str, Any]) -> None:
    doc["nodes"].append({"id": "side", "type": "relu"})
    doc["edges"].append({"from": "lm_head", "to": "side"})
    doc["outputs"].append({"name": "side", "node_id": "side"})


def _ce_on_probabilities(doc: dict[str, Any]) -> None:
    _edit_node(doc, "loss", cost_function="ce")


def _fp16_loss(doc: dict[str, Any]) -> None:
    doc["precision"] = "fp16"
    next(n for n in doc["nodes"] if n["id"] == "loss")["config"].pop("cost_precision")


LM_HEAD_LEFT_ALONE: dict[str, Callable[[dict[str, Any]], None]] = {
    "linear with a bias": lambda d: _edit_node(d, "lm_head", bias=True),
    "logits used by another node": _logits_used_twice,
    "cross-entropy on probabilities": _ce_on_probabilities,
    "loss computed in fp16": _fp16_loss,
}


@pytest.mark.parametrize("case", list(LM_HEAD_LEFT_ALONE))
def test_lm_head_patterns_not_fully_recognised_are_left_alone(case: str) -> None:
    doc = copy.deepcopy(lm_doc())
    LM_HEAD_LEFT_ALONE[case](doc)
    p = planned(doc)
    assert p.spec.nodes["loss"].type == "cost" and "loss" not in p.fused
    assert p.spec.nodes["lm_head"].type == "linear"
    assert "attention" in types(p).values()  # the heads are still fused: each pass decides alone


def test_an_untied_lm_head_is_left_alone() -> None:
    doc = lm_doc()
    _edit_node(doc, "lm_head", tie_weight_alias=None)
    _edit_node(doc, "embedder", shared_weight_alias=None)
    assert planned(doc).spec.nodes["loss"].type == "cost"
