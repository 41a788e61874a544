"""Property tests: whatever a user writes, the loader answers with a NetworkSpec or a clean NetworkError.

Valid documents (the tiny LM example and a few small hand-written networks) are mutated at
random, as data and as YAML text. The loader must never raise anything but `NetworkError`,
and every problem must be one non-empty line starting with the file name. Generated valid
chains must always load, with the shapes and parameter counts computed independently here.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dcnr import NetworkError, NetworkSpec, parse_network
from dcnr.nodes.registry import NODE_TYPES, TYPE_NAMES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "networks"
TINY_LM_TEXT = (EXAMPLES / "tiny_lm.yml").read_text()
TINY_LM = yaml.safe_load(TINY_LM_TEXT)

MLP = yaml.safe_load("""
name: mlp
precision: fp16
nodes:
  - {id: fc1, type: linear, config: {in_dim: "4", out_dim: 8}, input_shapes: [[3, 4]]}
  - {id: act, type: gelu}
  - {id: norm, type: layernorm, config: {dim: 8, eps: "1e-5"}}
  - {id: fc2, type: dense, config: {in_dim: 8, out_dim: 2, bias: "false", optimizer: sgd, momentum: 0.9}}
  - {id: loss, type: cost, config: {cost_function: mse}}
edges:
  - {from: fc1, to: act}
  - {from: act, to: norm}
  - {from: norm, to: fc2}
  - {from: fc2, to: loss, from_slot: 0, to_slot: 0}
inputs: [{name: x, node_id: fc1, slot_id: 0}, {name: y, node_id: loss, slot_id: 1}]
outputs: [{name: pred, node_id: fc2}]
costs: [{name: mse, node_id: loss}]
metrics: [{name: lr, type: learning_rate, node_id: fc1}]
""")

FAN_IN = yaml.safe_load("""
name: fan-in
nodes:
  - {id: split, type: broadcast, config: {num_outputs: 3}, input_shapes: [[5, 6]]}
  - {id: a, type: relu}
  - {id: b, type: reshape, config: {target_shape: "[5, 6]"}}
  - {id: c, type: dropout, config: {rate: 0.1}}
  - {id: cat, type: stack, config: {axis: -1}}
  - {id: sum, type: add}
  - {id: proj, type: linear, config: {in_dim: 18, out_dim: 6}}
edges:
  - {from: split, to: a, from_slot: 0}
  - {from: split, to: b, from_slot: 1}
  - {from: split, to: c, from_slot: 2}
  - {from: a, to: cat, to_slot: 0}
  - {from: b, to: cat, to_slot: 1}
  - {from: c, to: cat, to_slot: 2}
  - {from: cat, to: proj}
  - {from: proj, to: sum, to_slot: 0}
inputs: [{name: x, node_id: split}, {name: skip, node_id: sum, slot_id: 1}]
outputs: [{name: y, node_id: sum}]
""")

TIED = yaml.safe_load("""
name: tied
seed: 7
nodes:
  - {id: emb, type: embedder, config: {vocab_size: 16, dim: 8, seq_len: 4, shared_weight_alias: tok}}
  - {id: head, type: singleheadattention, config: {head_dim: 8, input_dim: 8, seq_len: 4, position_encoding: none}}
  - {id: mha, type: multiheadattention, config: {num_heads: 2, head_dim: 4, dim: 8, seq_len: 4}}
  - {id: ce, type: fusedlmheadce, config: {in_dim: 8, out_dim: 16, tie_weight_alias: tok, chunk_tokens: 2}}
edges:
  - {from: emb, to: head}
  - {from: head, to: mha}
  - {from: mha, to: ce}
inputs: [{name: tokens, node_id: emb}, {name: targets, node_id: ce, slot_id: 1}]
costs: [{name: loss, node_id: ce}]
""")

BASES = {"tiny_lm": TINY_LM, "mlp": MLP, "fan_in": FAN_IN, "tied": TIED}
SMALL_BASES = {k: v for k, v in BASES.items() if k != "tiny_lm"}

SECTIONS = ("nodes", "edges", "inputs", "outputs", "costs", "metrics")
TOP_SCALARS = ("name", "seed", "precision", "param_precision", "activation_precision")
CONFIG_KEYS = sorted({key for cls in NODE_TYPES.values() for key in cls.Config.model_fields})

BOUNDED = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies ------------------------------------------------------------------------------


def scalars() -> st.SearchStrategy[Any]:
    """Values a careless or hostile file might hold where a config value or slot goes."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**6), max_value=10**6),
        st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 10**30, 10**400, -(10**400)]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([1e300, -0.0, 0.5, 1.5, 1e-320]),
        st.text(max_size=12),
        st.sampled_from(["", " ", "abc", "64", " 64 ", "-5", "1e309", "nan", "[2, 4]", "[2, x]", "[", "{a: 1}",
                         "2001-13-01", "٣", "²", "true", "fp16", "adam", "rope", "a\nb", "a\u2028b", "\t"]),
    )


def junk() -> st.SearchStrategy[Any]:
    """Scalars, plus lists and mappings of them (also nested one level)."""
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=3)),
        max_leaves=6,
    )


def slot_values() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(min_value=-3, max_value=6), st.sampled_from([10**9, 2**64, "1", "x", 1.0, 2.5]),
                     scalars())


def node_ids(doc: dict[str, Any]) -> list[Any]:
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        return []
    return [n.get("id") for n in nodes if isinstance(n, dict)]


def some_id(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    """An existing node id most of the time, else junk."""
    ids = node_ids(doc)
    if ids and draw(st.integers(0, 3)):
        return draw(st.sampled_from(ids))
    return draw(st.one_of(st.text(max_size=8), scalars()))


def pick_dict(draw: st.DrawFn, items: Any) -> dict[str, Any] | None:
    if not isinstance(items, list):
        return None
    dicts = [x for x in items if isinstance(x, dict)]
    return draw(st.sampled_from(dicts)) if dicts else None


@st.composite
def mutate_once(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    """Apply one random mutation to `doc` in place."""
    kind = draw(st.sampled_from([
        "delete_node", "duplicate_node", "rename_node", "retype_node", "corrupt_config", "drop_config_key",
        "add_key", "corrupt_edge", "add_edge", "reverse_edge", "delete_item", "replace_section",
        "corrupt_binding", "corrupt_top", "swap_nodes", "corrupt_shapes",
    ]))
    nodes = doc.get("nodes")
    nodes = nodes if isinstance(nodes, list) else []
    if kind == "delete_node" and nodes:
        del nodes[draw(st.integers(0, len(nodes) - 1))]
    elif kind == "duplicate_node" and nodes:
        nodes.insert(draw(st.integers(0, len(nodes))), copy.deepcopy(draw(st.sampled_from(nodes))))
    elif kind == "rename_node" and (n := pick_dict(draw, nodes)) is not None:
        n["id"] = some_id(draw, doc) if draw(st.booleans()) else draw(st.one_of(st.text(max_size=8), scalars()))
    elif kind == "retype_node" and (n := pick_dict(draw, nodes)) is not None:
        n["type"] = draw(st.one_of(st.sampled_from(sorted(TYPE_NAMES)), st.text(max_size=14), scalars(),
                                   st.sampled_from(["atention_head", "Linear", " relu ", "LINEAR", "dense"])))
    elif kind == "corrupt_config" and (n := pick_dict(draw, nodes)) is not None:
        cfg = n.get("config")
        if isinstance(cfg, dict):
            keys = sorted(map(str, cfg)) or CONFIG_KEYS
            key = draw(st.one_of(st.sampled_from(keys), st.sampled_from(CONFIG_KEYS)))
            cfg[key] = draw(junk())
        else:
            n["config"] = draw(junk())
    elif kind == "drop_config_key" and (n := pick_dict(draw, nodes)) is not None:
        cfg = n.get("config")
        if isinstance(cfg, dict) and cfg:
            del cfg[draw(st.sampled_from(list(cfg)))]
        else:
            n.pop("config", None)
    elif kind == "add_key":
        targets: list[dict[str, Any]] = [doc]
        for section in SECTIONS:
            if (d := pick_dict(draw, doc.get(section))) is not None:
                targets.append(d)
                if isinstance(d.get("config"), dict):
                    targets.append(d["config"])
        target = draw(st.sampled_from(targets))
        target[draw(st.one_of(st.text(max_size=10), st.sampled_from(CONFIG_KEYS), st.integers()))] = draw(junk())
    elif kind == "corrupt_edge" and (e := pick_dict(draw, doc.get("edges"))) is not None:
        key = draw(st.sampled_from(["from", "to", "from_slot", "to_slot"]))
        e[key] = some_id(draw, doc) if key in ("from", "to") else draw(slot_values())
    elif kind == "add_edge" and isinstance(doc.get("edges"), list):
        edge = {"from": some_id(draw, doc), "to": some_id(draw, doc)}
        if draw(st.booleans()):
            edge["from_slot"] = draw(slot_values())
        if draw(st.booleans()):
            edge["to_slot"] = draw(slot_values())
        doc["edges"].append(edge)
    elif kind == "reverse_edge" and (e := pick_dict(draw, doc.get("edges"))) is not None:
        e["from"], e["to"] = e.get("to"), e.get("from")  # usually creates a cycle
    elif kind == "delete_item":
        section = draw(st.sampled_from(SECTIONS))
        items = doc.get(section)
        if isinstance(items, list) and items:
            del items[draw(st.integers(0, len(items) - 1))]
        else:
            doc.pop(section, None)
    elif kind == "replace_section":
        doc[draw(st.sampled_from(SECTIONS + TOP_SCALARS))] = draw(junk())
    elif kind == "corrupt_binding":
        section = draw(st.sampled_from(SECTIONS[2:]))
        if (b := pick_dict(draw, doc.get(section))) is not None:
            key = draw(st.sampled_from(["name", "node_id", "slot_id", "type"]))
            b[key] = some_id(draw, doc) if key == "node_id" else draw(junk())
        elif isinstance(doc.get(section), list):
            doc[section].append({"name": draw(st.text(max_size=5)), "node_id": some_id(draw, doc),
                                 "slot_id": draw(slot_values())})
    elif kind == "corrupt_top":
        doc[draw(st.sampled_from(TOP_SCALARS))] = draw(scalars())
    elif kind == "swap_nodes" and len(nodes) > 1:
        i, j = draw(st.integers(0, len(nodes) - 1)), draw(st.integers(0, len(nodes) - 1))
        nodes[i], nodes[j] = nodes[j], nodes[i]
    elif kind == "corrupt_shapes" and (n := pick_dict(draw, nodes)) is not None:
        n[draw(st.sampled_from(["input_shapes", "output_shapes"]))] = draw(
            st.one_of(junk(), st.lists(st.lists(st.integers(-2, 70), max_size=3), max_size=3)))


@st.composite
def mutated_docs(draw: st.DrawFn, bases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(bases[draw(st.sampled_from(sorted(bases)))])
    for _ in range(draw(st.integers(1, 4))):
        draw(mutate_once(doc))
    return doc


YAML_CHARS = st.sampled_from([*":-[]{},'\"#&*!|>%@`?\t\n ", "\x00", "\x85", "\u2028", "\ufeff", "é"])


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """Insert, delete or replace a few characters anywhere in the YAML text."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        new = draw(st.one_of(YAML_CHARS, st.characters()))
        if op == "insert":
            chars.insert(pos, new)
        elif chars and pos < len(chars):
            if op == "delete":
                del chars[pos]
            else:
                chars[pos] = new
    return "".join(chars)


# -- the property ------------------------------------------------------------------------------


def check(document: dict[str, Any] | str) -> NetworkSpec | None:
    """Parse; accept a NetworkSpec or a well-formed NetworkError, fail on anything else."""
    try:
        spec = parse_network(document, source="net.yml")
    except NetworkError as exc:
        assert exc.problems
        for line in exc.problems:
            assert isinstance(line, str) and line.strip(), repr(line)
            assert len(line.splitlines()) == 1, repr(line)
            assert line.startswith("net.yml"), repr(line)
            assert len(line) < 20_000, line[:200]
        return None
    assert isinstance(spec, NetworkSpec)
    check_invariants(spec)
    return spec


def check_invariants(spec: NetworkSpec) -> None:
    """What every valid spec guarantees to the runtime."""
    assert set(spec.topo_order) == set(spec.nodes) and len(spec.topo_order) == len(spec.nodes)
    pos = {nid: i for i, nid in enumerate(spec.topo_order)}
    fed: set[tuple[str, int]] = set()
    for e in spec.edges:
        assert pos[e.src] < pos[e.dst]
        assert 0 <= e.src_slot < spec.nodes[e.src].impl.num_outputs
        assert (e.dst, e.dst_slot) not in fed
        fed.add((e.dst, e.dst_slot))
    for b in spec.inputs:
        assert (b.node_id, b.slot_id) not in fed
        fed.add((b.node_id, b.slot_id))
    for nid, n in spec.nodes.items():
        assert len(n.input_shapes) == len(n.symbolic_inputs) == n.impl.num_inputs
        assert len(n.output_shapes) == len(n.symbolic_outputs) == n.impl.num_outputs
        for concrete, symbolic in zip((*n.input_shapes, *n.output_shapes), (*n.symbolic_inputs, *n.symbolic_outputs),
                                      strict=True):
            assert concrete == (symbolic.concrete if symbolic is not None else None)
        assert {(nid, s) for s in range(n.impl.num_inputs)} <= fed
        assert n.param_precision in ("float32", "fp16", "bf16")
        assert n.activation_precision in ("float32", "fp16", "bf16")
    for b in spec.costs:
        assert spec.nodes[b.node_id].impl.is_cost
    for line in spec.warnings:
        assert line.startswith("net.yml: nodes[") and len(line.splitlines()) == 1, repr(line)
    assert spec.num_parameters() >= 0


@BOUNDED
@given(mutated_docs(BASES))
def test_mutated_documents_never_crash(doc: dict[str, Any]) -> None:
    """Random structural mutations of valid networks give a spec or a clean NetworkError."""
    check(doc)


@BOUNDED
@given(mutated_docs(SMALL_BASES))
def test_mutated_documents_as_yaml_text_never_crash(doc: dict[str, Any]) -> None:
    """The same mutations, written out as YAML text and parsed back, behave the same way."""
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    from_text, from_data = check(text), check(doc)
    assert (from_text is None) == (from_data is None)


@BOUNDED
@given(st.sampled_from(sorted(SMALL_BASES)).flatmap(
    lambda name: mutated_text(yaml.safe_dump(SMALL_BASES[name], sort_keys=False, default_flow_style=None))))
def test_mutated_yaml_text_never_crashes(text: str) -> None:
    """Character-level damage to the YAML text gives a spec or a clean NetworkError."""
    check(text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_text(TINY_LM_TEXT))
def test_mutated_tiny_lm_text_never_crashes(text: str) -> None:
    """Character-level damage to the real example file (fewer examples: it is slow to parse)."""
    check(text)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(BASES)), st.randoms(use_true_random=False))
def test_node_order_in_the_file_does_not_matter(name: str, rnd: Any) -> None:
    """Shuffling the node list keeps the network valid with the same shapes and parameters."""
    base = parse_network(BASES[name], source="net.yml")
    doc = copy.deepcopy(BASES[name])
    rnd.shuffle(doc["nodes"])
    spec = check(doc)
    assert spec is not None
    assert {k: v.output_shapes for k, v in spec.nodes.items()} == {k: v.output_shapes for k, v in base.nodes.items()}
    assert spec.num_parameters() == base.num_parameters()


def test_base_documents_are_valid() -> None:
    """Every document the mutations start from is valid (so rejections come from the mutation)."""
    for name, doc in BASES.items():
        spec = check(doc)
        assert spec is not None, name
        assert spec.num_parameters() > 0


@BOUNDED
@given(st.sampled_from(sorted(BASES)), st.data())
def test_misspelt_type_is_reported_on_its_node(name: str, data: st.DataObject) -> None:
    """Damaging one node's type name gives an 'unknown node type' problem on exactly that node."""
    doc = copy.deepcopy(BASES[name])
    i = data.draw(st.integers(0, len(doc["nodes"]) - 1))
    old = doc["nodes"][i]["type"]
    pos = data.draw(st.integers(0, len(old)))
    new = old[:pos] + data.draw(st.sampled_from("xqz_9")) + old[pos + 1:]
    assume(new.strip().lower() not in TYPE_NAMES)
    doc["nodes"][i]["type"] = new
    try:
        parse_network(doc, source="net.yml")
    except NetworkError as exc:
        nid = doc["nodes"][i]["id"]
        assert f"net.yml: nodes[{i}] {nid!r}: type: unknown node type {new!r}" in "\n".join(exc.problems)
    else:
        raise AssertionError(f"type {new!r} was accepted")


# -- generated valid chains ------------------------------------------------------------------------


LAYERS = st.sampled_from(["linear", "relu", "gelu", "layernorm"])
PRECISIONS = st.sampled_from(["float32", "fp16", "bf16", "half", "fp32", "BF16"])
CANON = {"half": "fp16", "fp32": "float32", "BF16": "bf16", "float32": "float32", "fp16": "fp16", "bf16": "bf16"}


def maybe_quoted(draw: st.DrawFn, value: Any) -> Any:
    """The value itself, or as a string the way upstream files write it."""
    if not draw(st.booleans()):
        return value
    if isinstance(value, bool):
        return draw(st.sampled_from(["true", "True", "yes"] if value else ["false", "False", "no"]))
    return draw(st.sampled_from([str(value), f" {value} "]))


@st.composite
def chains(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random valid chain and what the loader should find: shapes, parameters, precisions."""
    seq = draw(st.integers(1, 6))
    dim = draw(st.integers(1, 12))
    n = draw(st.integers(1, 8))
    net_precision = draw(st.one_of(st.none(), PRECISIONS))
    doc: dict[str, Any] = {"name": "chain", "nodes": [], "edges": []}
    if net_precision is not None:
        doc["precision"] = net_precision
    expect: dict[str, Any] = {"shapes": {}, "params": 0, "precision": {}}
    prev = None
    for i in range(n):
        kind = draw(LAYERS)
        nid = f"n{i}_{kind}"
        config: dict[str, Any] = {}
        type_name = kind
        if kind == "linear":
            out = draw(st.integers(1, 12))
            bias = draw(st.booleans())
            config = {"in_dim": maybe_quoted(draw, dim), "out_dim": maybe_quoted(draw, out),
                      "bias": maybe_quoted(draw, bias)}
            type_name = draw(st.sampled_from(["linear", "dense", "Linear", "DENSE"]))
            expect["params"] += out * dim + (out if bias else 0)
            dim = out
        elif kind == "layernorm":
            config = {"dim": maybe_quoted(draw, dim)}
            if draw(st.booleans()):
                config["eps"] = maybe_quoted(draw, draw(st.sampled_from([1e-5, 1e-6, 0.001])))
            expect["params"] += 2 * dim
        if draw(st.booleans()):
            config["lr"] = maybe_quoted(draw, draw(st.sampled_from([0.1, 3e-4, 1])))
        node_precision = draw(st.one_of(st.none(), PRECISIONS))
        if node_precision is not None:
            config["precision"] = maybe_quoted(draw, node_precision)
        chosen = node_precision or net_precision or "float32"
        expect["precision"][nid] = CANON[chosen]
        node: dict[str, Any] = {"id": nid, "type": type_name, "config": config}
        if prev is None:
            node["input_shapes"] = [[seq, dim if kind != "linear" else int(str(config["in_dim"]).strip())]]
            doc["inputs"] = [{"name": "x", "node_id": nid, "slot_id": maybe_quoted(draw, 0)}]
        else:
            doc["edges"].append({"from": prev, "to": nid})
        if draw(st.integers(0, 3)) == 0:
            node["output_shapes"] = [[seq, dim]]  # a correct declaration must be accepted
        doc["nodes"].append(node)
        expect["shapes"][nid] = (seq, dim)
        prev = nid
    doc["outputs"] = [{"name": "y", "node_id": prev}]
    return doc, expect


@BOUNDED
@given(chains(), st.booleans())
def test_generated_chains_validate_with_expected_shapes(case: tuple[dict[str, Any], dict[str, Any]],
                                                        as_text: bool) -> None:
    """Random consistent chains (values randomly quoted) load, with the shapes and counts computed here."""
    doc, expect = case
    spec = check(yaml.safe_dump(doc, sort_keys=False) if as_text else doc)
    assert spec is not None
    assert list(spec.topo_order) == [n["id"] for n in doc["nodes"]]
    for nid, shape in expect["shapes"].items():
        assert spec.nodes[nid].output_shapes == (shape,)
        assert spec.nodes[nid].param_precision == expect["precision"][nid]
        assert spec.nodes[nid].activation_precision == expect["precision"][nid]
    ordered = list(spec.nodes.values())
    for a, b in itertools.pairwise(ordered):
        assert b.input_shapes == a.output_shapes  # inferred shapes agree along every edge
    assert spec.num_parameters() == expect["params"]
    assert spec.num_parameters() == sum(math.prod(s) for s in spec.parameter_shapes().values())


@BOUNDED
@given(chains(), st.data())
def test_breaking_a_dimension_is_reported_on_that_node(case: tuple[dict[str, Any], dict[str, Any]],
                                                        data: st.DataObject) -> None:
    """Changing one dimension-bearing config value in a valid chain is reported on exactly that node."""
    doc, _ = case
    sized = [(i, n) for i, n in enumerate(doc["nodes"]) if n["type"].lower() in ("linear", "dense", "layernorm")]
    assume(sized)
    i, node = data.draw(st.sampled_from(sized))
    key = "dim" if node["type"] == "layernorm" else "in_dim"
    node["config"][key] = int(str(node["config"][key]).strip()) + data.draw(st.integers(1, 5))
    try:
        parse_network(doc, source="net.yml")
    except NetworkError as exc:
        assert any(line.startswith(f"net.yml: nodes[{i}] {node['id']!r}: input slot 0: expected last axis")
                   for line in exc.problems), exc.problems
    else:
        raise AssertionError(f"changing {key} of {node['id']!r} went unnoticed")
