"""Shape inference with symbolic axes: every mismatch the node configs fix is refused at validation,
even when no shape is declared, and nothing unknown is ever refused.

The rules of each catalog type are checked one by one against a table; random networks built
from most of the catalog are validated without declared shapes and then run with PyTorch, whose
tensor shapes are the reference the inferred shapes must match.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcnr import LocalExecutor, NetworkError, load_network, parse_network
from dcnr.errors import ShapeError
from dcnr.nodes.registry import NODE_TYPES, canonical_type
from dcnr.shapes import SymShape

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "networks"


def sh(text: str) -> SymShape | None:
    """`[..., S, 16]` -> SymShape(("S", 16), open=True); `text` -> None."""
    if text == "text":
        return None
    items = [x.strip() for x in text.strip("[]").split(",") if x.strip()]
    is_open = bool(items) and items[0] == "..."
    dims = tuple(int(x) if x.isdigit() else x for x in items[is_open:])
    return SymShape(dims, is_open)


def rule(ntype: str, config: dict[str, Any], *inputs: str) -> list[str]:
    """The outputs of one node type's shape rule, written as text."""
    cls = NODE_TYPES[canonical_type(ntype) or ntype]
    impl = cls("n", cls.Config.model_validate(config), num_inputs=len(inputs))
    return ["text" if s is None else str(s) for s in impl.infer_shapes([sh(x) for x in inputs])]


LM_HEAD = {"in_dim": 4, "out_dim": 10, "tie_weight_alias": "tok"}
TEXT = {"vocab_size": 10, "vocab_path": "v.json"}

# (type, config, input shapes, output shapes); one case per behaviour worth naming
RULES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    ("linear", {"in_dim": 32, "out_dim": 16}, ["[..., 32]"], ["[..., 16]"]),
    ("linear", {"in_dim": 32, "out_dim": 16}, ["[...]"], ["[..., 16]"]),
    ("dense", {"in_dim": 32, "out_dim": 16}, ["[S, 32]"], ["[S, 16]"]),
    ("linear", {"in_dim": 32, "out_dim": 16}, ["[..., D]"], ["[..., 16]"]),
    ("embedder", {"vocab_size": 10, "dim": 4, "seq_len": 8}, ["[S]"], ["[S, 4]"]),
    ("embedder", {"vocab_size": 10, "dim": 4, "seq_len": 8}, ["[...]"], ["[S, 4]"]),
    ("embedder", {"vocab_size": 10, "dim": 4, "seq_len": 8}, ["[8]"], ["[8, 4]"]),
    ("layernorm", {"dim": 6}, ["[..., S, D]"], ["[..., S, 6]"]),
    ("attention_head", {"head_dim": 4, "input_dim": 6, "seq_len": 8}, ["[...]"], ["[S, 4]"]),
    ("attention_head", {"head_dim": 4, "input_dim": 6, "seq_len": 8}, ["[..., 6]"], ["[S, 4]"]),
    ("attention_head", {"head_dim": 4, "input_dim": 6, "seq_len": 8}, ["[3, 6]"], ["[3, 4]"]),
    ("attention", {"num_heads": 2, "head_dim": 2, "dim": 6, "seq_len": 8}, ["[T, 6]"], ["[T, 6]"]),
    ("attention", {"num_heads": 2, "head_dim": 2, "dim": 6, "seq_len": 8, "output_projection": False},
     ["[..., 6]"], ["[S, 4]"]),
    ("tied_lm_head_ce", LM_HEAD, ["[S, 4]", "[S]"], ["[]"]),
    ("tied_lm_head_ce", LM_HEAD, ["[..., 4]", "[3]"], ["[]"]),
    ("tied_lm_head_ce", LM_HEAD, ["[...]", "[...]"], ["[]"]),
    ("relu", {}, ["[..., S, 3]"], ["[..., S, 3]"]),
    ("gelu", {}, ["[2, 3]"], ["[2, 3]"]),
    ("silu", {}, ["[...]"], ["[...]"]),
    ("dropout", {"rate": 0.5}, ["[S, 3]"], ["[S, 3]"]),
    ("swiglu", {}, ["[..., 8]"], ["[..., 4]"]),
    ("swiglu", {}, ["[S, D]"], ["[S, D/2]"]),
    ("swiglu", {}, ["[...]"], ["[...]"]),
    ("broadcast", {"num_outputs": 3}, ["[..., 5]"], ["[..., 5]"] * 3),
    ("broadcast", {}, ["text"], ["text", "text"]),
    ("stack", {}, ["[..., 2]", "[..., 3]"], ["[..., 5]"]),
    ("stack", {}, ["[S, 2]", "[S, 3]", "[S, 1]"], ["[S, 6]"]),
    ("stack", {}, ["[4, 2]", "[..., 3]"], ["[4, 5]"]),
    ("stack", {}, ["[4, S]", "[4, 3]"], ["[4, S+3]"]),
    ("stack", {"axis": 0}, ["[2, 3]", "[4, 3]"], ["[6, 3]"]),
    ("stack", {"axis": 0}, ["[..., 3]", "[..., 3]"], ["[..., ?]"]),
    ("stack", {"axis": 1}, ["[..., 2, 3, 4]", "[..., 5, 6, 4]"], ["[..., ?, ?, 4]"]),
    ("stack", {"axis": -3}, ["[..., 2, 3]", "[..., 2, 3]"], ["[..., 2, 3]"]),
    ("stack", {"axis": -2}, ["[..., 2, 3]", "[..., 4, 3]"], ["[..., 6, 3]"]),
    ("add", {}, ["[..., 4]", "[S, 4]"], ["[S, 4]"]),
    ("add", {}, ["[...]", "[2, 4]", "[..., 4]"], ["[2, 4]"]),
    ("reshape", {"target_shape": [-1, 4]}, ["[3, 8]"], ["[6, 4]"]),
    ("reshape", {"target_shape": [-1, 4]}, ["[..., 8]"], ["[N, 4]"]),
    ("reshape", {"target_shape": [5, 5]}, ["[..., 5]"], ["[5, 5]"]),
    ("reshape", {"target_shape": [8, 2]}, ["[S, 4]"], ["[8, 2]"]),
    ("mask", {}, ["[..., S, S]"], ["[..., S, S]"]),
    ("mask", {}, ["[..., 4, S]"], ["[..., 4, S]"]),
    ("mask", {}, ["[...]"], ["[...]"]),
    ("tokenizer", {**TEXT, "pad_length": 6}, ["text"], ["[6]"]),
    ("detokenizer", TEXT, ["[..., 6]"], ["text"]),
    ("cost", {"cost_function": "mse"}, ["[..., 3]", "[S, 3]"], ["[]"]),
    ("cost", {"cost_function": "ce_logits", "vocab_size": 10}, ["[S, 10]", "[S]"], ["[]"]),
    ("cost", {"cost_function": "ce", "in_dim": 10}, ["[...]", "[3]"], ["[]"]),
]

# (type, config, input shapes, the ShapeError message)
MISMATCHES: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("linear", {"in_dim": 32, "out_dim": 16}, ["[..., 16]"],
     "input slot 0: expected last axis 32 (in_dim), got shape [..., 16]"),
    ("linear", {"in_dim": 32, "out_dim": 16}, ["[]"], "input slot 0: expected last axis 32 (in_dim), got shape []"),
    ("linear", {"in_dim": 32, "out_dim": 16}, ["text"], "input slot 0: expected a tensor, got text"),
    ("embedder", {"vocab_size": 10, "dim": 4, "seq_len": 8}, ["[9]"], "input slot 0: 9 tokens exceed seq_len 8"),
    ("embedder", {"vocab_size": 10, "dim": 4, "seq_len": 8}, ["[..., 2, S]"],
     "input slot 0: expected 1 axes (token ids), got shape [..., 2, S]"),
    ("layernorm", {"dim": 6}, ["[S, 5]"], "input slot 0: expected last axis 6 (dim), got shape [S, 5]"),
    ("attention_head", {"head_dim": 4, "input_dim": 6, "seq_len": 8}, ["[2, S, 6]"],
     "input slot 0: expected 2 axes (input_dim), got shape [2, S, 6]"),
    ("attention_head", {"head_dim": 4, "input_dim": 6, "seq_len": 8}, ["[..., 5]"],
     "input slot 0: expected last axis 6 (input_dim), got shape [S, 5]"),
    ("attention", {"num_heads": 2, "head_dim": 2, "dim": 6, "seq_len": 8}, ["[S, 4]"],
     "input slot 0: expected last axis 6 (dim), got shape [S, 4]"),
    ("tied_lm_head_ce", LM_HEAD, ["[..., 5]", "[S]"],
     "input slot 0: expected last axis 4 (in_dim), got shape [..., 5]"),
    ("tied_lm_head_ce", LM_HEAD, ["[3, 4]", "[4]"], "input slot 1: expected target shape [3], got [4]"),
    ("relu", {}, ["text"], "input slot 0: expected a tensor, got text"),
    ("swiglu", {}, ["[..., 7]"], "input slot 0: expected an even last axis, got shape [..., 7]"),
    ("swiglu", {}, ["[]"], "input slot 0: expected an even last axis, got shape []"),
    ("stack", {}, ["[4, 2]", "[5, 3]"], "input slot 1: shape [5, 3] does not match slot 0 [4, 2] outside axis -1"),
    ("stack", {}, ["[4, 2]", "[..., 1, 4, 3]"],
     "input slot 1: shape [..., 1, 4, 3] does not match slot 0 [4, 2] outside axis -1"),
    ("stack", {"axis": 0}, ["[..., 2, 3]", "[..., 4, 5]"],
     "input slot 1: shape [..., 4, 5] does not match slot 0 [..., 2, 3] outside axis 0"),
    ("stack", {"axis": 5}, ["[2]", "[2]"], "axis 5 is out of range for 1 axes"),
    ("add", {}, ["[3, 4]", "[3, 5]"], "input slot 1: shape [3, 5] differs from [3, 4]"),
    ("add", {}, ["[..., 4]", "[S, 4]", "[2, 3, 4]"], "input slot 2: shape [2, 3, 4] differs from [S, 4]"),
    ("reshape", {"target_shape": [-1, 4]}, ["[3, 5]"], "cannot reshape [3, 5] to target_shape [-1, 4]"),
    ("reshape", {"target_shape": [5, 5]}, ["[3, 8]"], "cannot reshape [3, 8] (24 elements) to target_shape [5, 5]"),
    ("reshape", {"target_shape": [5, 5]}, ["[..., 16]"],
     "cannot reshape [..., 16] (a multiple of 16 elements) to target_shape [5, 5] (25 elements)"),
    ("mask", {}, ["[3, 4]"], "input slot 0: expected scores [.., S, S], got shape [3, 4]"),
    ("mask", {}, ["[4]"], "input slot 0: expected scores [.., S, S], got shape [4]"),
    ("tokenizer", {**TEXT, "pad_length": 6}, ["[6]"], "input slot 0: expected text, got a tensor of shape [6]"),
    ("detokenizer", TEXT, ["text"], "input slot 0: expected a tensor, got text"),
    ("cost", {"cost_function": "mse"}, ["[2, 3]", "[2, 4]"],
     "input slot 1: expected target shape [2, 3] for mse on prediction [2, 3], got [2, 4]"),
    ("cost", {"cost_function": "ce_logits", "vocab_size": 10}, ["[S, 9]", "[S]"],
     "input slot 0: expected last axis 10 (vocab_size), got shape [S, 9]"),
    ("cost", {"cost_function": "ce_logits"}, ["[4, 10]", "[4, 10]"],
     "input slot 1: expected target shape [4] for ce_logits on prediction [4, 10], got [4, 10]"),
    ("cost", {"cost_function": "ce"}, ["[]", "[]"], "input slot 0: expected a class axis for ce, got shape []"),
]


@pytest.mark.parametrize(("ntype", "config", "inputs", "outputs"), RULES)
def test_rule(ntype: str, config: dict[str, Any], inputs: list[str], outputs: list[str]) -> None:
    """Known axes are checked and carried, symbols and open prefixes pass through unrefused."""
    assert rule(ntype, config, *inputs) == outputs


@pytest.mark.parametrize(("ntype", "config", "inputs", "message"), MISMATCHES)
def test_rule_refuses_known_mismatch(ntype: str, config: dict[str, Any], inputs: list[str], message: str) -> None:
    """A mismatch between known axes is a ShapeError naming the slot, what was expected and what came."""
    with pytest.raises(ShapeError) as info:
        rule(ntype, config, *inputs)
    assert str(info.value) == message


def test_every_catalog_type_has_rule_cases() -> None:
    """The tables above cover every type of the catalog, both ways where a type can refuse anything."""
    covered = {canonical_type(t) for t, *_ in RULES}
    refused = {canonical_type(t) for t, *_ in MISMATCHES}
    assert covered == set(NODE_TYPES)
    assert set(NODE_TYPES) - refused == {"gelu", "silu", "dropout", "broadcast"}  # share relu's rule, or take anything


# -- through the loader ---------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(NetworkError) as info:
        parse_network(text, source="net.yml")
    return info.value.problems


def test_issue_example_fails_at_validation() -> None:
    """linear (out_dim 16) -> linear (in_dim 32) without declared shapes: one line naming the file, `out`,
    the expected 32 and the 16 it gets."""
    assert problems("""
nodes:
  - {id: hidden, type: linear, config: {in_dim: 8, out_dim: 16}}
  - {id: out, type: linear, config: {in_dim: 32, out_dim: 4}}
edges: [{from: hidden, to: out}]
inputs: [{name: x, node_id: hidden}]
""") == ["net.yml: nodes[1] 'out': input slot 0: expected last axis 32 (in_dim), got shape [..., 16] "
         "(edge hidden[0] -> out[0] brings [..., 16])"]


def test_mismatch_behind_unknown_axes_is_found_far_downstream() -> None:
    """Known axes survive symbolic ones through several types: a reshape to [-1, 5], a head, a stack."""
    found = problems("""
nodes:
  - {id: a, type: relu}
  - {id: b, type: swiglu}
  - {id: c, type: layernorm, config: {dim: 5}}
  - {id: r, type: reshape, config: {target_shape: [-1, 5]}}
  - {id: h, type: attention_head, config: {head_dim: 4, input_dim: 5, seq_len: 9, position_encoding: none}}
  - {id: s, type: stack}
  - {id: loss, type: cost, config: {cost_function: ce_logits, vocab_size: 8}}
edges: [{from: a, to: b}, {from: b, to: c}, {from: c, to: r}, {from: r, to: h}, {from: h, to: s},
        {from: r, to: s, to_slot: 1}, {from: s, to: loss}]
inputs: [{name: x, node_id: a}, {name: y, node_id: loss, slot_id: 1}]
""")
    assert found == ["net.yml: nodes[6] 'loss': input slot 0: expected last axis 8 (vocab_size), got shape [N, 9] "
                     "(edge s[0] -> loss[0] brings [N, 9])"]


def test_text_into_a_tensor_slot_is_refused() -> None:
    """A detokenizer's text cannot feed a linear: the edge is named and what it brings."""
    assert problems("""
nodes:
  - {id: detok, type: detokenizer, config: {vocab_size: 10, vocab_path: v.json}}
  - {id: fc, type: linear, config: {in_dim: 4, out_dim: 2}}
edges: [{from: detok, to: fc}]
inputs: [{name: ids, node_id: detok}]
""") == ["net.yml: nodes[1] 'fc': input slot 0: expected a tensor, got text (edge detok[0] -> fc[0] brings text)"]


def test_unknown_axes_stay_symbolic_in_the_spec() -> None:
    """Without declared shapes the spec keeps what is known (symbolic_*); input/output_shapes stay None
    unless every axis is known, and a declaration makes them concrete."""
    text = """
nodes:
  - {id: fc, type: linear, config: {in_dim: 4, out_dim: 6}}
  - {id: act, type: swiglu}
edges: [{from: fc, to: act}]
inputs: [{name: x, node_id: fc}]
"""
    spec = parse_network(text)
    assert [str(s) for s in spec.nodes["act"].symbolic_outputs] == ["[..., 3]"]
    assert spec.nodes["act"].output_shapes == (None,)
    declared = parse_network(text.replace("out_dim: 6}}", "out_dim: 6}, input_shapes: [[5, 4]]}"))
    assert declared.nodes["act"].output_shapes == ((5, 3),)
    assert [str(s) for s in declared.nodes["act"].symbolic_outputs] == ["[5, 3]"]


def test_declared_shape_refines_a_symbolic_one() -> None:
    """A declared input shape compatible with a symbolic edge is accepted and fixes the unknown axes."""
    spec = parse_network("""
nodes:
  - {id: fc, type: linear, config: {in_dim: 4, out_dim: 6}}
  - {id: act, type: relu, input_shapes: [[2, 6]]}
edges: [{from: fc, to: act}]
inputs: [{name: x, node_id: fc}]
""")
    assert spec.nodes["act"].output_shapes == ((2, 6),)


@pytest.mark.parametrize("name", ["topology1", "topology2", "tiny_lm"])
def test_reference_networks_are_fully_inferred(name: str) -> None:
    """Every output of the example networks has a concrete inferred shape (tokens fix everything)."""
    spec = load_network(EXAMPLES / f"{name}.yml")
    for nid, node in spec.nodes.items():
        assert all(s is not None for s in node.output_shapes), nid
        assert tuple(s.concrete if s else None for s in node.symbolic_outputs) == node.output_shapes, nid


# -- random networks against PyTorch --------------------------------------------------------------

STEPS = ["linear", "relu", "gelu", "silu", "dropout", "layernorm", "swiglu", "attention_head", "attention",
         "reshape", "residual", "concat"]
CHECKED = {"linear": "in_dim", "layernorm": "dim", "attention_head": "input_dim", "attention": "dim"}


@st.composite
def networks(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A random valid network over most of the catalog, without declared shapes (unless drawn), and
    inputs to run it with."""
    batch = draw(st.integers(1, 2))
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    inputs: list[dict[str, Any]] = []
    feeds: dict[str, torch.Tensor] = {}
    counter = itertools.count()
    ints = st.integers

    def add(ntype: str, **config: Any) -> str:
        nid = f"n{next(counter)}_{ntype}"
        nodes.append({"id": nid, "type": ntype, "config": config})
        return nid

    def connect(src: tuple[str, int] | None, dst: str, to_slot: int = 0) -> None:
        if src is None:
            inputs.append({"name": "x", "node_id": dst, "slot_id": to_slot})
        else:
            edges.append({"from": src[0], "to": dst, "from_slot": src[1], "to_slot": to_slot})

    prev: tuple[str, int] | None
    if draw(st.booleans()):  # token ids: the embedder fixes the sequence length
        seq, vocab, d = draw(ints(1, 4)), draw(ints(2, 12)), draw(ints(1, 8))
        emb = add("embedder", vocab_size=vocab, dim=d, seq_len=seq,
                  position_encoding=draw(st.sampled_from(["learned", "none"])))
        connect(None, emb)
        feeds["x"] = torch.randint(0, vocab, (batch, seq))
        lead: tuple[int, ...] = (seq,)
        prev = (emb, 0)
    else:  # features with leading axes nobody declares
        lead, d = tuple(draw(st.lists(ints(1, 3), max_size=2))), draw(ints(1, 8))
        feeds["x"] = torch.randn(batch, *lead, d)
        prev = None
    declare = prev is None and draw(st.integers(0, 3)) == 0
    for _ in range(draw(ints(1, 6))):
        kind = draw(st.sampled_from(STEPS))
        if kind in ("attention_head", "attention") and len(lead) != 1:
            kind = "reshape"  # attention needs [seq, dim]: make it so first
        if kind == "swiglu" and d % 2:
            kind = "relu"
        start = len(nodes)
        if kind == "linear":
            out = draw(ints(1, 8))
            nid = add("linear", in_dim=d, out_dim=out, bias=draw(st.booleans()))
            d = out
        elif kind == "layernorm":
            nid = add("layernorm", dim=d)
        elif kind == "swiglu":
            nid, d = add("swiglu"), d // 2
        elif kind == "attention_head":
            hd = 2 * draw(ints(1, 3))
            longer = draw(ints(0, 2)) if prev is not None else 0  # a network input defaults to seq_len tokens
            nid = add("attention_head", head_dim=hd, input_dim=d, seq_len=lead[0] + longer,
                      position_encoding=draw(st.sampled_from(["rope", "none"])))
            d = hd
        elif kind == "attention":
            heads, hd, proj = draw(ints(1, 3)), 2 * draw(ints(1, 2)), draw(st.booleans())
            nid = add("attention", num_heads=heads, head_dim=hd, dim=d, seq_len=lead[0], output_projection=proj)
            d = d if proj else heads * hd
        elif kind == "reshape":
            nid, lead = add("reshape", target_shape=[-1, d]), (math.prod(lead),)
        elif kind in ("residual", "concat"):
            split = add("broadcast", num_outputs=2)
            connect(prev, split)
            out = d if kind == "residual" else draw(ints(1, 8))
            branch = add("linear", in_dim=d, out_dim=out)
            nid = add("add" if kind == "residual" else "stack")
            edges.extend([{"from": split, "to": branch}, {"from": branch, "to": nid},
                          {"from": split, "to": nid, "from_slot": 1, "to_slot": 1}])
            prev, d = (nid, 0), (out + d if kind == "concat" else d)
            continue
        else:
            nid = add(kind)
        connect(prev, nid)
        if declare and start == 0:
            nodes[0]["input_shapes"] = [list(feeds["x"].shape[1:])]
        prev = (nid, 0)
    loss = draw(st.sampled_from(["none", "mse", "ce_logits"]))
    if loss != "none" and prev is not None:
        key = draw(st.sampled_from(["vocab_size", "in_dim"]))
        cost = add("cost", cost_function=loss, **({key: d} if loss == "ce_logits" else {}))
        connect(prev, cost)
        inputs.append({"name": "y", "node_id": cost, "slot_id": 1})
        feeds["y"] = torch.randn(batch, *lead, d) if loss == "mse" else torch.randint(0, d, (batch, *lead))
    doc = {"name": "random", "nodes": nodes, "edges": edges, "inputs": inputs,
           "outputs": [{"name": n["id"], "node_id": n["id"]} for n in nodes if n["type"] != "cost"]}
    return doc, feeds


def matches(shape: SymShape, actual: tuple[int, ...]) -> bool:
    """Whether a tensor of `actual` shape (batch axis dropped) is one that `shape` describes."""
    if len(actual) < len(shape.dims) or (not shape.open and len(actual) != len(shape.dims)):
        return False
    tail = actual[len(actual) - len(shape.dims):]
    return all(not isinstance(d, int) or d == a for d, a in zip(shape.dims, tail, strict=True))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(networks())
def test_random_networks_validate_and_match_pytorch(case: tuple[dict[str, Any], dict[str, torch.Tensor]]) -> None:
    """Random valid networks validate without declared shapes, and every inferred output shape describes
    the tensor PyTorch actually computes there."""
    doc, feeds = case
    spec = parse_network(yaml.safe_dump(doc, sort_keys=False), source="net.yml")
    got = LocalExecutor(spec).forward(feeds)
    for nid, value in got.items():
        (inferred,) = spec.nodes[nid].symbolic_outputs[:1]
        assert inferred is not None and matches(inferred, tuple(value.shape[1:])), (nid, inferred, value.shape)
    if "input_shapes" in doc["nodes"][0] or spec.nodes[doc["nodes"][0]["id"]].type == "embedder":
        # shapes start known: every one is inferred exactly
        assert all(s is not None for n in spec.nodes.values() for s in n.output_shapes)


@SETTINGS
@given(networks(), st.data())
def test_perturbed_dimension_is_refused_on_its_node(case: tuple[dict[str, Any], dict[str, torch.Tensor]],
                                                    data: st.DataObject) -> None:
    """Changing a dimension a node checks its input against gives exactly one problem, on that node,
    naming the key, the new value and the size that arrives; where nothing fixes that size (an
    undeclared network input, which takes the node's own default) that node is not refused."""
    doc, _ = case
    sized = [(i, n) for i, n in enumerate(doc["nodes"]) if n["type"] in CHECKED or
             (n["type"] == "cost" and n["config"].keys() & {"vocab_size", "in_dim"})]
    if not sized:
        return
    i, node = data.draw(st.sampled_from(sized))
    arriving = parse_network(doc, source="net.yml").nodes[node["id"]].symbolic_inputs[0]
    assert arriving is not None
    key = CHECKED.get(node["type"]) or next(iter(node["config"].keys() & {"vocab_size", "in_dim"}))
    old = node["config"][key]
    node["config"][key] = new = old + data.draw(st.integers(1, 4))
    text = yaml.safe_dump(doc, sort_keys=False)
    fed = "input_shapes" in node or any(e["to"] == node["id"] for e in doc["edges"])  # else: its own default
    if not fed or not arriving.dims or not isinstance(arriving.dims[-1], int):
        try:  # the node itself is never refused; what it now outputs may not fit the next node
            parse_network(text, source="net.yml")
        except NetworkError as exc:
            assert not any(f"nodes[{i}] {node['id']!r}:" in line for line in exc.problems), exc.problems
        return
    found = problems(text)
    assert len(found) == 1, found
    match = re.fullmatch(rf"net\.yml: nodes\[{i}\] '{node['id']}': input slot 0: expected last axis {new} "
                         rf"\({key}\), got shape \[(.*, )?{old}\]( \(edge .* brings \[.*\]\))?", found[0])
    assert match, found[0]
