"""Network definitions: every class of user error gives a useful one-line problem, all at once.

The problems are checked for the content a user needs (file, node or edge, key, what was
expected and what was found), not just for "an error was raised".
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

import dcnr
from dcnr import NetworkError, NetworkSpec, load_network, parse_network
from dcnr.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "networks"


# -- helpers -----------------------------------------------------------------------


def mlp() -> dict[str, Any]:
    """A small valid network: linear -> relu -> linear -> mse cost, with known input shapes."""
    return {
        "name": "mlp",
        "nodes": [
            {"id": "fc1", "type": "linear", "config": {"in_dim": 4, "out_dim": 8}, "input_shapes": [[3, 4]]},
            {"id": "act", "type": "relu"},
            {"id": "fc2", "type": "linear", "config": {"in_dim": 8, "out_dim": 2}},
            {"id": "loss", "type": "cost", "config": {"cost_function": "mse"}},
        ],
        "edges": [
            {"from": "fc1", "to": "act"},
            {"from": "act", "to": "fc2"},
            {"from": "fc2", "to": "loss"},
        ],
        "inputs": [{"name": "x", "node_id": "fc1", "slot_id": 0}, {"name": "y", "node_id": "loss", "slot_id": 1}],
        "outputs": [{"name": "pred", "node_id": "fc2", "slot_id": 0}],
        "costs": [{"name": "mse", "node_id": "loss", "slot_id": 0}],
    }


def parse(doc: dict[str, Any] | str) -> NetworkSpec:
    """Parse a document given as a dict (dumped to YAML first) or as YAML text."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    return parse_network(textwrap.dedent(text), source="net.yml")


def problems(doc: dict[str, Any] | str) -> list[str]:
    """The problems of an invalid document, after checking they are well-formed lines."""
    with pytest.raises(NetworkError) as info:
        parse(doc)
    found = info.value.problems
    assert found, "a NetworkError always carries at least one problem"
    for line in found:
        assert line.startswith("net.yml: "), line
        assert len(line.splitlines()) == 1 and line.strip() == line, repr(line)
    assert str(info.value) == "\n".join(found)
    return found


def node(doc: dict[str, Any], nid: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == nid)


def test_base_document_is_valid() -> None:
    """The fixture every negative test mutates is itself valid, with inferred shapes."""
    spec = parse(mlp())
    assert list(spec.nodes) == ["fc1", "act", "fc2", "loss"]
    assert spec.nodes["fc2"].output_shapes == ((3, 2),)
    assert spec.nodes["loss"].output_shapes == ((),)
    assert spec.topo_order == ("fc1", "act", "fc2", "loss")


# -- unknown type ------------------------------------------------------------------------


def test_unknown_type_suggests_closest_name() -> None:
    """A misspelt type names the node and suggests the closest catalog name."""
    doc = mlp()
    node(doc, "act")["type"] = "atention_head"
    assert problems(doc) == [
        "net.yml: nodes[1] 'act': type: unknown node type 'atention_head' (did you mean 'attention_head'?)"
    ]


@pytest.mark.parametrize(("typo", "meant"), [("lienar", "linear"), ("layer_norm", "layernorm"), ("Gelu_", "gelu")])
def test_unknown_type_suggestions(typo: str, meant: str) -> None:
    """Several typos each get the intended type as the suggestion."""
    doc = mlp()
    node(doc, "act")["type"] = typo
    (line,) = problems(doc)
    assert line.endswith(f"unknown node type {typo!r} (did you mean {meant!r}?)")


def test_unknown_type_without_a_close_name_has_no_suggestion() -> None:
    """Nothing is suggested when no type is close (no misleading guess)."""
    doc = mlp()
    node(doc, "act")["type"] = "qqqqqqqqqqqq"
    (line,) = problems(doc)
    assert line == "net.yml: nodes[1] 'act': type: unknown node type 'qqqqqqqqqqqq'"


def test_missing_type() -> None:
    """A node without a type says a type name was expected."""
    doc = mlp()
    del node(doc, "act")["type"]
    assert problems(doc) == ["net.yml: nodes[1] 'act': type: expected a node type name, got None"]


# -- config values -----------------------------------------------------------------------


def test_bad_config_value_matches_issue_example() -> None:
    """The exact message of the issue: file, nodes[3] 'head_0', config.head_dim, expected/got."""
    text = """\
        nodes:
          - {id: emb, type: embedder, config: {vocab_size: 32, dim: 16, seq_len: 8}}
          - {id: ln, type: layernorm, config: {dim: 16}}
          - {id: drop, type: dropout}
          - id: head_0
            type: attention_head
            config: {head_dim: abc, input_dim: 16, seq_len: 8}
        edges:
          - {from: emb, to: ln}
          - {from: ln, to: drop}
          - {from: drop, to: head_0}
        inputs: [{name: tokens, node_id: emb}]
        """
    assert problems(text) == ["net.yml: nodes[3] 'head_0': config.head_dim: expected a positive integer, got 'abc'"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("out_dim", -3, "config.out_dim: expected a positive integer, got -3"),
        ("out_dim", 0, "config.out_dim: expected a positive integer, got 0"),
        ("out_dim", "2.5", "config.out_dim: expected a positive integer, got '2.5'"),
        ("out_dim", True, "config.out_dim: expected a positive integer, got True"),
        ("out_dim", [2], "config.out_dim: expected a positive integer, got [2]"),
        ("out_dim", 2**70, "config.out_dim: expected a positive integer of at most 9223372036854775807, got "),
        ("bias", "maybe", "config.bias: expected true or false, got 'maybe'"),
        ("lr", "fast", "config.lr: expected a positive number, got 'fast'"),
        ("lr", ".nan", "config.lr: expected a positive number, got "),
        ("optimizer", "adagrad", "config.optimizer: expected one of adam, adamw, sgd, got 'adagrad'"),
        ("betas", [0.9], "config.betas: expected two numbers in [0, 1), like [0.9, 0.999], got [0.9]"),
        ("precision", "fp64", "config.precision: expected one of float32, fp16, bf16, got 'fp64'"),
        ("colocate_policy", "always", "config.colocate_policy: expected one of preferred, required, got 'always'"),
    ],
)
def test_bad_config_values(key: str, value: Any, message: str) -> None:
    """Each bad value names the node, the key, what was expected and what was found."""
    doc = mlp()
    node(doc, "fc2")["config"][key] = value
    if value == ".nan":
        doc = yaml.safe_dump(doc, sort_keys=False).replace("'.nan'", ".nan")  # a real YAML NaN
    (line,) = problems(doc)
    assert line.startswith("net.yml: nodes[2] 'fc2': " + message), line


def test_missing_required_config_keys_are_each_reported() -> None:
    """Every missing required key is its own problem, naming the key."""
    doc = mlp()
    node(doc, "fc2")["config"] = {}
    assert sorted(problems(doc)) == [
        "net.yml: nodes[2] 'fc2': config.in_dim: missing required key",
        "net.yml: nodes[2] 'fc2': config.out_dim: missing required key",
    ]


def test_unknown_config_key_suggests_closest() -> None:
    """A misspelt config key is reported with the closest known key."""
    doc = mlp()
    node(doc, "fc2")["config"]["out_dimm"] = 2
    assert problems(doc) == ["net.yml: nodes[2] 'fc2': config.out_dimm: unknown key (did you mean 'out_dim'?)"]


@pytest.mark.parametrize("config", [[1, 2], "in_dim: 8", 7, []])
def test_config_that_is_not_a_mapping(config: Any) -> None:
    """A config that is not a mapping (even an empty list) is rejected, naming the node."""
    doc = mlp()
    node(doc, "fc2")["config"] = config
    (line,) = problems(doc)
    assert line.startswith("net.yml: nodes[2] 'fc2': config: expected a mapping, got ")


def test_unknown_node_key_and_top_level_key() -> None:
    """Unknown keys on a node and at the top level are reported with a suggestion."""
    doc = mlp()
    node(doc, "act")["confg"] = {}
    doc["edegs"] = []
    found = problems(doc)
    assert "net.yml: nodes[1] 'act': unknown key 'confg' (did you mean 'config'?)" in found
    assert "net.yml: edegs: unknown top-level key (did you mean 'edges'?)" in found


def test_the_validation_key_sets_sessions_default_policy() -> None:
    """`validation:` is off, full or sample:P (default sample:0.05); anything else is one line naming the key."""
    assert parse(mlp()).validation == "sample:0.05"
    for text, want in (("full", "full"), ("OFF", "off"), ("sample:0.5", "sample:0.5")):
        assert parse({**mlp(), "validation": text}).validation == want
    for bad in ("sometimes", "sample:2", 0.5, ["full"]):
        (line,) = problems({**mlp(), "validation": bad})
        assert line.startswith("net.yml: validation: validation must be off, full or sample:P with 0 < P <= 1"), line


# -- ids, edges, slots ---------------------------------------------------------------------


def test_duplicate_id_names_both_positions() -> None:
    """A duplicate id points at the later node and at the node that used the id first."""
    doc = mlp()
    doc["nodes"].append({"id": "fc1", "type": "relu"})
    assert problems(doc) == ["net.yml: nodes[4] 'fc1': duplicate id (first used by nodes[0])"]


def test_dangling_edge_names_edge_end_and_suggests() -> None:
    """An edge to an unknown node names the edge, the end and the closest existing id."""
    doc = mlp()
    doc["edges"][2]["to"] = "los"
    found = problems(doc)
    assert "net.yml: edges[2] (fc2[0] -> los[0]): to: unknown node 'los' (did you mean 'loss'?)" in found
    # the cost's prediction slot is now unconnected: reported in the same run
    assert "net.yml: nodes[3] 'loss': input slot 0 is not connected and is not a network input" in found


def test_dangling_edge_source() -> None:
    """An edge from an unknown node is reported at its `from` end."""
    doc = mlp()
    doc["edges"][0]["from"] = "nowhere"
    found = problems(doc)
    assert found[0] == "net.yml: edges[0] (nowhere[0] -> act[0]): from: unknown node 'nowhere'"


def test_to_slot_out_of_range() -> None:
    """An edge into a slot a fixed-arity node lacks names the edge and the slot count."""
    doc = mlp()
    doc["edges"][1]["to_slot"] = 1
    found = problems(doc)
    assert "net.yml: edge act[0] -> fc2[1]: to_slot 1 out of range: 'fc2' has 1 input slot(s)" in found


def test_from_slot_out_of_range() -> None:
    """An edge out of a slot the source lacks names the edge and the output count."""
    doc = mlp()
    doc["edges"][1]["from_slot"] = 3
    assert problems(doc) == ["net.yml: edge act[3] -> fc2[0]: from_slot 3 out of range: 'act' has 1 output slot(s)"]


@pytest.mark.parametrize("slot", [-1, "two", 1.5, True, None])
def test_bad_slot_value(slot: Any) -> None:
    """A slot that is not a non-negative integer is rejected with the key and the value."""
    doc = mlp()
    doc["edges"][1]["to_slot"] = slot
    found = problems(doc)
    assert found[0].startswith(f"net.yml: edges[1].to_slot: expected a non-negative integer, got {slot!r}")


def test_binding_slot_out_of_range() -> None:
    """An output bound to a slot the node does not have is reported by binding name."""
    doc = mlp()
    doc["outputs"][0]["slot_id"] = 2
    assert problems(doc) == ["net.yml: outputs 'pred': slot_id 2 out of range: node 'fc2' has 1 output slot(s)"]


def test_binding_to_unknown_node() -> None:
    """A binding naming an unknown node is reported with a suggestion."""
    doc = mlp()
    doc["outputs"][0]["node_id"] = "fc3"
    (line,) = problems(doc)
    assert line.startswith("net.yml: outputs[0] 'pred': node_id: unknown node 'fc3' (did you mean ")


def test_two_edges_into_one_input_slot() -> None:
    """Two edges feeding one input slot is an error naming both."""
    doc = mlp()
    doc["edges"].append({"from": "fc1", "to": "fc2"})
    found = problems(doc)
    assert ("net.yml: edge fc1[0] -> fc2[0]: input slot 0 of 'fc2' is already fed by edge act[0] -> fc2[0]"
            in found)


def test_edge_into_a_network_input_slot() -> None:
    """An edge into a slot that is already a network input is an error naming the input."""
    doc = mlp()
    doc["nodes"].insert(0, {"id": "pre", "type": "relu"})
    doc["inputs"].append({"name": "x2", "node_id": "pre"})
    doc["edges"].append({"from": "pre", "to": "fc1"})
    found = problems(doc)
    assert "net.yml: edge pre[0] -> fc1[0]: input slot 0 of 'fc1' is already fed by network input 'x'" in found


def test_unbound_input() -> None:
    """An input slot fed by no edge and no network input is reported per node and slot."""
    doc = mlp()
    doc["inputs"] = [b for b in doc["inputs"] if b["name"] != "y"]
    assert problems(doc) == ["net.yml: nodes[3] 'loss': input slot 1 is not connected and is not a network input"]


# -- cycles --------------------------------------------------------------------------------


def test_cycle_names_its_members() -> None:
    """A cycle is reported once, naming each member in edge order and closing the loop."""
    text = """\
        nodes:
          - {id: start, type: relu}
          - {id: join, type: add}
          - {id: mid, type: relu}
          - {id: back, type: relu}
          - {id: tail, type: relu}
        edges:
          - {from: start, to: join, to_slot: 0}
          - {from: back, to: join, to_slot: 1}
          - {from: join, to: mid}
          - {from: mid, to: back}
          - {from: back, to: tail}
        inputs: [{name: x, node_id: start}]
        """
    assert problems(text) == ["net.yml: edges: cycle: back -> join -> mid -> back"]


def test_self_loop_is_a_cycle() -> None:
    """A node feeding itself is a one-member cycle."""
    text = """\
        nodes:
          - {id: a, type: add}
        edges:
          - {from: a, to: a, to_slot: 1}
        inputs: [{name: x, node_id: a}]
        """
    assert problems(text) == ["net.yml: edges: cycle: a -> a"]


def test_two_disjoint_cycles_are_both_reported() -> None:
    """Each independent cycle is its own problem."""
    nodes = [{"id": i, "type": "add"} for i in ("a", "b", "c", "d")]
    edges = [{"from": "a", "to": "b", "to_slot": 1}, {"from": "b", "to": "a", "to_slot": 1},
             {"from": "c", "to": "d", "to_slot": 1}, {"from": "d", "to": "c", "to_slot": 1}]
    inputs = [{"name": f"x{i}", "node_id": n["id"]} for i, n in enumerate(nodes)]
    found = problems({"nodes": nodes, "edges": edges, "inputs": inputs})
    assert sorted(found) == ["net.yml: edges: cycle: a -> b -> a", "net.yml: edges: cycle: c -> d -> c"]


def test_long_cycle_does_not_overflow_the_stack() -> None:
    """A cycle of thousands of nodes is reported, not a RecursionError."""
    n = 3000
    nodes = [{"id": "n0", "type": "add"}] + [{"id": f"n{i}", "type": "relu"} for i in range(1, n)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
    edges.append({"from": f"n{n - 1}", "to": "n0", "to_slot": 1})
    with pytest.raises(NetworkError) as info:
        parse_network({"nodes": nodes, "edges": edges, "inputs": [{"name": "x", "node_id": "n0"}]}, source="net.yml")
    (line,) = info.value.problems
    assert line.startswith("net.yml: edges: cycle: n0 -> n1 -> n2 -> ")
    assert line.endswith(f"n{n - 1} -> n0")


# -- shapes ----------------------------------------------------------------------------------


def test_inferable_shape_mismatch_names_node_axis_and_edge() -> None:
    """A shape mismatch found by inference names the node, the expected axis and the edge."""
    doc = mlp()
    node(doc, "fc2")["config"]["in_dim"] = 9
    assert problems(doc) == [
        "net.yml: nodes[2] 'fc2': input slot 0: expected last axis 9 (in_dim), got shape [3, 8] "
        "(edge act[0] -> fc2[0] brings [3, 8])"
    ]


def test_declared_input_shape_mismatch() -> None:
    """A declared input shape that disagrees with the incoming edge is an error."""
    doc = mlp()
    node(doc, "fc2")["input_shapes"] = [[3, 9]]
    assert problems(doc) == [
        "net.yml: nodes[2] 'fc2': input slot 0: declared shape [3, 9] but edge act[0] -> fc2[0] brings [3, 8]"
    ]


def test_declared_output_shape_mismatch() -> None:
    """A declared output shape that disagrees with inference is an error naming the type."""
    doc = mlp()
    node(doc, "fc2")["output_shapes"] = [[3, 5]]
    assert problems(doc) == [
        "net.yml: nodes[2] 'fc2': output slot 0: declared shape [3, 5] but the linear computes [3, 2]"
    ]


def test_config_output_shape_override_is_checked() -> None:
    """`output_shape` in config is checked like a declared output shape."""
    doc = mlp()
    node(doc, "act")["config"] = {"output_shape": "[3, 7]"}
    (line,) = problems(doc)
    assert line == "net.yml: nodes[1] 'act': output slot 0: declared shape [3, 7] but the relu computes [3, 8]"


@pytest.mark.parametrize("shapes", [[3, 4], [[3, "x"]], [[0]], "[[3, 4]]", [[True]]])
def test_malformed_declared_shapes(shapes: Any) -> None:
    """input_shapes must be a list of lists of positive integers."""
    doc = mlp()
    node(doc, "fc1")["input_shapes"] = shapes
    (line,) = problems(doc)
    assert line.startswith("net.yml: nodes[0] 'fc1': input_shapes: expected a list of shapes like [[32, 64]], got ")


def test_cost_target_shape_mismatch() -> None:
    """An mse target whose shape differs from the prediction is an inferable mismatch."""
    doc = mlp()
    doc["nodes"].insert(0, {"id": "tgt", "type": "relu", "input_shapes": [[3, 5]]})
    doc["inputs"] = [{"name": "x", "node_id": "fc1"}, {"name": "y", "node_id": "tgt"}]
    doc["edges"].append({"from": "tgt", "to": "loss", "to_slot": 1})
    (line,) = problems(doc)
    assert line.startswith("net.yml: nodes[4] 'loss': input slot 1: expected target shape [3, 2] for mse on "
                           "prediction [3, 2], got [3, 5]")


# -- variadic nodes --------------------------------------------------------------------------


def fan_in(slots: list[int], node_type: str = "stack") -> dict[str, Any]:
    """A broadcast feeding `len(slots)` relus whose outputs enter `node_type` at `slots`."""
    n = len(slots)
    nodes: list[dict[str, Any]] = [
        {"id": "split", "type": "broadcast", "config": {"num_outputs": n}, "input_shapes": [[5, 6]]}
    ]
    edges = []
    for i, slot in enumerate(slots):
        nodes.append({"id": f"r{i}", "type": "relu"})
        edges += [{"from": "split", "to": f"r{i}", "from_slot": i}, {"from": f"r{i}", "to": "join", "to_slot": slot}]
    nodes.append({"id": "join", "type": node_type})
    return {"nodes": nodes, "edges": edges, "inputs": [{"name": "x", "node_id": "split"}]}


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_stack_slot_count_comes_from_edges(n: int) -> None:
    """A stack has exactly as many input slots as edges feed it, and concatenates their last axes."""
    spec = parse(fan_in(list(range(n))))
    join = spec.nodes["join"]
    assert join.impl.num_inputs == n
    assert join.input_shapes == ((5, 6),) * n
    assert join.output_shapes == ((5, 6 * n),)


def test_add_slot_count_comes_from_edges() -> None:
    """An add takes its slot count from the edges and keeps the common shape."""
    spec = parse(fan_in([2, 0, 1], "add"))
    assert spec.nodes["join"].impl.num_inputs == 3
    assert spec.nodes["join"].output_shapes == ((5, 6),)


def test_gap_in_stack_input_slots_is_reported() -> None:
    """Slots 0 and 2 without 1 leave a gap, reported as slot 1."""
    assert problems(fan_in([0, 2])) == [
        "net.yml: nodes[3] 'join': input slot 1 is not connected and is not a network input"
    ]


def test_wide_gap_is_one_problem_not_millions() -> None:
    """A huge to_slot on a variadic node is one problem naming the missing range (no hang)."""
    assert problems(fan_in([0, 10**9])) == [
        "net.yml: nodes[3] 'join': input slots 1 to 999999999 are not connected and are not network inputs"
    ]


def test_add_with_different_shapes() -> None:
    """An add whose inputs differ in shape names the slot and both shapes."""
    doc = fan_in([0, 1], "add")
    doc["nodes"].insert(2, {"id": "wide", "type": "linear", "config": {"in_dim": 6, "out_dim": 4}})
    doc["edges"] = [e for e in doc["edges"] if e["from"] != "r1"]
    doc["edges"] += [{"from": "r1", "to": "wide"}, {"from": "wide", "to": "join", "to_slot": 1}]
    (line,) = problems(doc)
    assert line.startswith("net.yml: nodes[4] 'join': input slot 1: shape [5, 4] differs from [5, 6]")


def test_broadcast_with_absurd_output_count() -> None:
    """A broadcast asking for 10^9 outputs is a clean problem, not a memory blow-up."""
    doc = fan_in([0])
    node(doc, "split")["config"]["num_outputs"] = 10**9
    found = problems(doc)
    assert "net.yml: nodes[0] 'split': config.num_outputs: expected at most 65536 output slots, got 1000000000" in found


# -- bindings: costs, metrics ------------------------------------------------------------------


def test_cost_binding_to_a_non_cost_node() -> None:
    """`costs` must point at a cost node; the message names the type found."""
    doc = mlp()
    doc["costs"][0]["node_id"] = "fc2"
    assert problems(doc) == [
        "net.yml: costs 'mse': node 'fc2' is a linear, not a cost (expected type cost or tied_lm_head_ce)"
    ]


def test_metric_on_node_without_parameters() -> None:
    """A learning-rate metric needs a node with parameters."""
    doc = mlp()
    doc["metrics"] = [{"name": "lr", "type": "learning_rate", "node_id": "act"}]
    assert problems(doc) == ["net.yml: metrics 'lr': node 'act' has no parameters, so no learning rate"]


def test_metric_with_unknown_type() -> None:
    """A metric type outside the known list is reported with the allowed values."""
    doc = mlp()
    doc["metrics"] = [{"name": "m", "type": "accuracy", "node_id": "fc2"}]
    assert problems(doc) == ["net.yml: metrics[0] 'm': type: expected one of learning_rate, got 'accuracy'"]


def test_duplicate_binding_names() -> None:
    """Two outputs with one name are reported."""
    doc = mlp()
    doc["outputs"].append({"name": "pred", "node_id": "fc1"})
    assert problems(doc) == ["net.yml: outputs[1].name: duplicate name 'pred'"]


@pytest.mark.parametrize("section", ["inputs", "outputs", "costs", "metrics", "edges"])
@pytest.mark.parametrize("value", [{}, 0, "x", {"name": "x"}])
def test_sections_of_the_wrong_type(section: str, value: Any) -> None:
    """A list section given as a mapping, number or string is an error on that key."""
    doc = mlp()
    doc[section] = value
    found = problems(doc)
    assert any(line.startswith(f"net.yml: {section}: expected a list of ") for line in found), found


# -- weight ties -----------------------------------------------------------------------------


def tied(**lm_head: Any) -> dict[str, Any]:
    """An embedder publishing `tok` and a bias-free linear tied to it."""
    head = {"in_dim": 8, "out_dim": 16, "bias": False, "tie_weight_alias": "tok", **lm_head}
    return {
        "nodes": [
            {"id": "emb", "type": "embedder",
             "config": {"vocab_size": 16, "dim": 8, "seq_len": 4, "shared_weight_alias": "tok"}},
            {"id": "head", "type": "linear", "config": head},
        ],
        "edges": [{"from": "emb", "to": "head"}],
        "inputs": [{"name": "tokens", "node_id": "emb"}],
        "outputs": [{"name": "logits", "node_id": "head"}],
    }


def test_valid_tie_shares_one_parameter() -> None:
    """A tied linear stores no weight of its own: the publisher holds it once."""
    spec = parse(tied())
    assert spec.publishers() == {"tok": "emb"}
    assert "head.weight" not in spec.parameter_shapes()
    assert spec.parameter_shapes()["emb.weight"] == (16, 8)
    assert spec.nodes["head"].output_shapes == ((4, 16),)


def test_tie_to_unpublished_alias() -> None:
    """A tie to an alias nobody publishes names the node, the key, the alias and a suggestion."""
    assert problems(tied(tie_weight_alias="tokk")) == [
        "net.yml: nodes[1] 'head': config.tie_weight_alias: no node publishes 'tokk' "
        "(set shared_weight_alias on the node that owns the weight) (did you mean 'tok'?)"
    ]


def test_tied_weight_shape_mismatch() -> None:
    """Tying weights of different shapes names both shapes and the publisher."""
    assert problems(tied(out_dim=10)) == [
        "net.yml: nodes[1] 'head': config.tie_weight_alias: weight shape [10, 8] does not match [16, 8] "
        "published by 'emb'"
    ]


def test_duplicate_shared_weight_alias() -> None:
    """Two nodes publishing under one alias is an error naming the first publisher."""
    doc = tied(tie_weight_alias=None, shared_weight_alias="tok")
    del node(doc, "head")["config"]["tie_weight_alias"]
    assert problems(doc) == [
        "net.yml: nodes[1] 'head': config.shared_weight_alias: 'tok' is already published by 'emb'"
    ]


def test_publishing_without_a_weight() -> None:
    """A weightless node cannot publish a weight."""
    doc = mlp()
    node(doc, "act")["config"] = {"shared_weight_alias": "w"}
    assert problems(doc) == ["net.yml: nodes[1] 'act': config.shared_weight_alias: a relu has no weight to publish"]


# -- YAML and document shape -------------------------------------------------------------------


def test_yaml_syntax_error_reports_line() -> None:
    """A YAML syntax error is one problem giving the line and column of the fault."""
    text = "name: t\nnodes:\n  - {id: a, type: relu\n  - {id: b, type: relu}\n"
    (line,) = problems(text)
    assert line.startswith("net.yml: line 4, column 5: invalid YAML: expected ',' or '}'"), line


def test_yaml_indentation_error_reports_line() -> None:
    """A bad indentation deep in the file gives that line, not line 1."""
    lines = ["name: t", "nodes:", "  - id: a", "    type: relu", "   config: {}", "edges: []"]
    (line,) = problems("\n".join(lines) + "\n")
    assert line.startswith("net.yml: line 5, column 4: invalid YAML: "), line


def test_yaml_tab_error() -> None:
    """A tab used for indentation is reported with its line."""
    (line,) = problems("name: t\nnodes:\n\t- {id: a, type: relu}\n")
    assert line.startswith("net.yml: line 3, column 1: invalid YAML: found character '\\t'"), line


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="this PyYAML was built without libyaml")
def test_a_large_definition_is_parsed_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML's pure-Python parser took 17 s to refuse a fuzzed 4 MiB definition (one long string), longer than
    the caller waited; only a document libyaml refuses goes to it (for its messages: see the tab above)."""
    def slow(text: str) -> Any:
        raise AssertionError("parsed by the pure-Python parser")

    monkeypatch.setattr(yaml, "safe_load", slow)
    (line,) = problems("a b\n" * 2**20)
    assert line == "net.yml: expected a mapping with 'nodes' and 'edges' at the top level, got str"
    assert parse(mlp()).name == "mlp"


@pytest.mark.parametrize("text", ["seed: 2001-13-01\n", "nodes: " + "[" * 3000 + "]" * 3000 + "\n",
                                  "seed: " + "9" * 5000 + "\n", "nodes: !!python/object:os.system {}\n"])
def test_yaml_values_the_constructor_rejects(text: str) -> None:
    """Bad dates, absurd nesting, giant ints and python tags are NetworkErrors, not crashes."""
    (line,) = problems(text)
    assert "invalid YAML" in line or "could not determine a constructor" in line, line


def test_ints_too_long_to_print_in_a_mapping() -> None:
    """A mapping passed directly may hold ints Python refuses to print; each is located, none crashes."""
    doc = mlp()
    doc["edges"][0]["to_slot"] = 10**5000
    node(doc, "fc1")["input_shapes"] = [[3, -(10**6000)]]
    with pytest.raises(NetworkError) as info:
        parse_network(doc, source="net.yml")
    assert info.value.problems == [
        "net.yml: edges[0].to_slot: integer of more than 8192 bits; no size, slot, id or seed is that large",
        "net.yml: nodes[0].input_shapes[0][1]: integer of more than 8192 bits; no size, slot, id or seed is that large",
    ]


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("42\n", "int"), ("", "empty"),
                                            ("# only a comment\n", "empty"), ("just text\n", "str")])
def test_document_that_is_not_a_mapping(text: str, kind: str) -> None:
    """A document that is not a mapping says so and says what it got instead."""
    assert problems(text) == [f"net.yml: expected a mapping with 'nodes' and 'edges' at the top level, got {kind}"]


@pytest.mark.parametrize("nodes", [None, [], {"a": 1}, "fc1", 3])
def test_nodes_missing_or_wrong_type(nodes: Any) -> None:
    """`nodes` must be a non-empty list."""
    doc: dict[str, Any] = {"name": "t"}
    if nodes is not None:
        doc["nodes"] = nodes
    (line,) = problems(doc)
    assert line.startswith("net.yml: nodes: "), line


@pytest.mark.parametrize(("key", "value"), [("seed", -1), ("seed", "x"), ("seed", "²"), ("name", ""),
                                            ("name", 3), ("precision", "fp8"), ("param_precision", 16)])
def test_bad_top_level_values(key: str, value: Any) -> None:
    """Top-level scalars are checked and reported under their key."""
    doc = mlp()
    doc[key] = value
    (line,) = problems(doc)
    assert line.startswith(f"net.yml: {key}: expected "), line


# -- all at once, one line each -------------------------------------------------------------------


def test_all_problems_are_reported_at_once() -> None:
    """Five independent mistakes give five problems in one NetworkError, in file order."""
    doc = mlp()
    doc["nodes"] += [
        {"id": "h", "type": "atention_head"},
        {"id": "fc1", "type": "relu"},
        {"id": "lin", "type": "linear", "config": {"in_dim": "abc", "out_dim": 2}},
    ]
    doc["edges"].append({"from": "act", "to": "ghost"})
    doc["seed"] = -4
    found = problems(doc)
    assert found == [
        "net.yml: seed: expected a non-negative integer, got -4",
        "net.yml: nodes[4] 'h': type: unknown node type 'atention_head' (did you mean 'attention_head'?)",
        "net.yml: nodes[5] 'fc1': duplicate id (first used by nodes[0])",
        "net.yml: nodes[6] 'lin': config.in_dim: expected a positive integer, got 'abc'",
        "net.yml: edges[3] (act[0] -> ghost[0]): to: unknown node 'ghost'",
    ]


@pytest.mark.parametrize("bad", ["a\nb", "a\r\nb", "a\u2028b", "a\x85b", "a\x0bb"])
def test_line_breaks_in_ids_and_keys_stay_on_one_line(bad: str) -> None:
    """Ids, keys and top-level names holding line breaks never split a problem over lines."""
    doc = mlp()
    doc["nodes"].append({"id": bad, "type": "relu"})
    doc["edges"].append({"from": bad, "to": "ghost" + bad})
    node(doc, "fc2")["config"][bad] = 1
    doc[bad] = 1
    with pytest.raises(NetworkError) as info:
        parse_network(doc, source="net.yml")
    found = info.value.problems
    assert len(found) >= 4
    for line in found:
        assert len(line.splitlines()) == 1 and line.startswith("net.yml: "), repr(line)


# -- positive: examples, values, aliases, precision, shapes ---------------------------------------


@pytest.mark.parametrize(("name", "vnodes", "params_m"), [("topology1", 139, 27.2), ("topology2", 183, 45.1)])
def test_reference_topologies(name: str, vnodes: int, params_m: float) -> None:
    """The SPEC topologies load with the documented VNode and parameter counts."""
    spec = load_network(EXAMPLES / f"{name}.yml")
    assert len(spec.nodes) == vnodes
    assert abs(spec.num_parameters() / 1e6 - params_m) < 0.05
    assert spec.path == str(EXAMPLES / f"{name}.yml")
    assert [c.name for c in spec.costs] == ["ce_loss"]
    assert len(spec.topo_order) == vnodes and set(spec.topo_order) == set(spec.nodes)


def test_tiny_lm_is_small_and_fully_shaped() -> None:
    """tiny_lm has under 1 M parameters and every tensor output shape is inferred."""
    spec = load_network(EXAMPLES / "tiny_lm.yml")
    assert 0 < spec.num_parameters() <= 1_000_000
    missing = [nid for nid, n in spec.nodes.items() if any(s is None for s in n.output_shapes)]
    assert missing == []
    assert spec.nodes["loss"].output_shapes == ((),)


def test_topological_order_respects_edges() -> None:
    """Every edge goes from an earlier to a later node in topo_order."""
    spec = load_network(EXAMPLES / "tiny_lm.yml")
    pos = {nid: i for i, nid in enumerate(spec.topo_order)}
    assert all(pos[e.src] < pos[e.dst] for e in spec.edges)


def test_load_network_missing_file(tmp_path: Path) -> None:
    """A missing file is a NetworkError naming the path."""
    path = tmp_path / "absent.yml"
    with pytest.raises(NetworkError) as info:
        load_network(path)
    assert info.value.problems == [f"{path}: no such file"]


def test_load_network_uses_path_as_source(tmp_path: Path) -> None:
    """Problems from a file start with that file's path."""
    path = tmp_path / "net.yml"
    path.write_text("nodes:\n  - {id: a, type: rleu}\n")
    with pytest.raises(NetworkError) as info:
        load_network(path)
    assert info.value.problems == [f"{path}: nodes[0] 'a': type: unknown node type 'rleu' (did you mean 'relu'?)"]


def test_quoted_config_values_equal_plain_scalars() -> None:
    """Quoting every config value as a string (the upstream format) builds identical configs."""
    plain = yaml.safe_load((EXAMPLES / "tiny_lm.yml").read_text())
    quoted = copy.deepcopy(plain)
    for n in quoted["nodes"]:
        n["config"] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in n["config"].items()}
    assert any(isinstance(v, str) and v.isdigit() for n in quoted["nodes"] for v in n["config"].values())
    a, b = parse_network(plain, source="net.yml"), parse_network(quoted, source="net.yml")
    assert list(a.nodes) == list(b.nodes)
    for nid in a.nodes:
        assert a.nodes[nid].config == b.nodes[nid].config, nid
        assert a.nodes[nid].output_shapes == b.nodes[nid].output_shapes
    assert a.num_parameters() == b.num_parameters()


def test_quoted_values_are_typed() -> None:
    """A quoted "64" becomes the int 64 and "true" the bool True, not strings."""
    spec = parse('nodes: [{id: a, type: linear, config: {in_dim: "64", out_dim: "8", bias: "false", lr: "1e-2"}}]\n'
                 "inputs: [{name: x, node_id: a}]\n")
    cfg = spec.nodes["a"].config
    assert (cfg.in_dim, cfg.out_dim, cfg.bias, cfg.lr) == (64, 8, False, 0.01)
    assert isinstance(cfg.in_dim, int) and not isinstance(cfg.in_dim, bool)


@pytest.mark.parametrize("target", ["[6, 4]", "[6,4]", [6, 4], "[-1, 4]", ["6", "4"], "[2, -1, 2]"])
def test_list_keys_as_strings_or_lists(target: Any) -> None:
    """target_shape works as a YAML list or a string like "[6, 4]", -1 being inferred."""
    doc = mlp()
    node(doc, "act")["type"] = "reshape"
    node(doc, "act")["config"] = {"target_shape": target}
    node(doc, "fc2")["config"]["in_dim"] = 2 if target == "[2, -1, 2]" else 4
    spec = parse(doc)
    want = (2, 6, 2) if target == "[2, -1, 2]" else (6, 4)
    assert spec.nodes["act"].output_shapes == (want,)
    assert spec.nodes["act"].config.target_shape in ((6, 4), (-1, 4), (2, -1, 2))


def test_betas_as_string() -> None:
    """betas given as the string "[0.8, 0.95]" equals the list form."""
    doc = mlp()
    node(doc, "fc2")["config"]["betas"] = "[0.8, 0.95]"
    assert parse(doc).nodes["fc2"].config.betas == (0.8, 0.95)


@pytest.mark.parametrize("target", ["[2, x]", "[2, 4", "[0, 4]", "[-1, -1]", "2001-13-01", "[2.5]"])
def test_bad_list_strings(target: str) -> None:
    """A malformed list string is a config problem, never a crash."""
    doc = mlp()
    node(doc, "act")["type"] = "reshape"
    node(doc, "act")["config"] = {"target_shape": target}
    found = problems(doc)
    assert found[0].startswith("net.yml: nodes[1] 'act': config.target_shape: expected a list of positive integers")


def test_reshape_element_count_mismatch() -> None:
    """A reshape to a different element count is an inferable shape problem."""
    doc = mlp()
    node(doc, "act")["type"] = "reshape"
    node(doc, "act")["config"] = {"target_shape": [5, 5]}
    found = problems(doc)
    assert found[0] == "net.yml: nodes[1] 'act': cannot reshape [3, 8] (24 elements) to target_shape [5, 5] " \
                       "(edge fc1[0] -> act[0] brings [3, 8])"


@pytest.mark.parametrize(("alias", "canonical", "config"), [
    ("dense", "linear", {"in_dim": 8, "out_dim": 8}),
    ("Dense", "linear", {"in_dim": 8, "out_dim": 8}),
    ("singleheadattention", "attention_head", {"head_dim": 8, "input_dim": 8, "seq_len": 3}),
    ("multiheadattention", "attention", {"num_heads": 2, "head_dim": 4, "dim": 8, "seq_len": 3}),
])
def test_type_aliases_resolve(alias: str, canonical: str, config: dict[str, Any]) -> None:
    """Upstream type names resolve to the canonical type and its shape rule."""
    doc = mlp()
    node(doc, "act").update(type=alias, config=config)
    spec = parse(doc)
    assert spec.nodes["act"].type == canonical
    assert spec.nodes["act"].output_shapes == ((3, 8),)


def test_fusedlmheadce_alias_resolves() -> None:
    """fusedlmheadce is tied_lm_head_ce, a cost that uses the tied embedding."""
    doc = tied()
    doc["nodes"][1] = {"id": "head", "type": "fusedlmheadce",
                       "config": {"in_dim": 8, "out_dim": 16, "tie_weight_alias": "tok"}}
    doc["inputs"].append({"name": "targets", "node_id": "head", "slot_id": 1})
    doc["outputs"] = []
    doc["costs"] = [{"name": "ce", "node_id": "head"}]
    spec = parse(doc)
    assert spec.nodes["head"].type == "tied_lm_head_ce"
    assert spec.nodes["head"].impl.is_cost
    assert spec.nodes["head"].output_shapes == ((),)


def precisions(doc: dict[str, Any], nid: str) -> tuple[str, str]:
    n = parse(doc).nodes[nid]
    return n.param_precision, n.activation_precision


def test_precision_defaults_to_float32() -> None:
    """Without any precision key every node is float32."""
    assert precisions(mlp(), "fc2") == ("float32", "float32")


def test_network_precision_is_inherited() -> None:
    """Network `precision: fp16` sets both precisions of every node."""
    doc = mlp()
    doc["precision"] = "fp16"
    assert precisions(doc, "fc2") == ("fp16", "fp16")
    assert precisions(doc, "act") == ("fp16", "fp16")


def test_node_precision_overrides_network() -> None:
    """A node's own `precision` wins over the network default."""
    doc = mlp()
    doc["precision"] = "fp16"
    node(doc, "fc2")["config"]["precision"] = "bf16"
    assert precisions(doc, "fc2") == ("bf16", "bf16")
    assert precisions(doc, "fc1") == ("fp16", "fp16")


def test_param_and_activation_precision_separately() -> None:
    """param_precision and activation_precision are set independently, at both levels."""
    doc = mlp()
    doc["param_precision"] = "float32"
    doc["activation_precision"] = "bf16"
    assert precisions(doc, "fc1") == ("float32", "bf16")
    node(doc, "fc2")["config"]["param_precision"] = "half"
    assert precisions(doc, "fc2") == ("fp16", "bf16")
    node(doc, "fc2")["config"]["activation_precision"] = "fp32"
    assert precisions(doc, "fc2") == ("fp16", "float32")


def test_specific_network_key_beats_general_network_key() -> None:
    """Network param_precision beats network precision; node precision beats both."""
    doc = mlp()
    doc["precision"] = "fp16"
    doc["param_precision"] = "float32"
    assert precisions(doc, "fc1") == ("float32", "fp16")
    node(doc, "fc1")["config"]["precision"] = "bf16"
    assert precisions(doc, "fc1") == ("bf16", "bf16")


def test_reference_topology_precision_is_fp16() -> None:
    """topology1 declares fp16 and its nodes inherit it."""
    spec = load_network(EXAMPLES / "topology1.yml")
    assert {(n.param_precision, n.activation_precision) for n in spec.nodes.values()} == {("fp16", "fp16")}


@pytest.mark.parametrize(("seq", "dim", "head_dim"), [(8, 16, 4), (3, 6, 2), (64, 128, 32)])
def test_attention_head_shapes(seq: int, dim: int, head_dim: int) -> None:
    """attention_head maps [seq, input_dim] to [seq, head_dim] and owns three [head_dim, input_dim] weights."""
    text = f"""\
        nodes:
          - id: h
            type: attention_head
            config: {{head_dim: {head_dim}, input_dim: {dim}, seq_len: 999}}
            input_shapes: [[{seq}, {dim}]]
        inputs: [{{name: x, node_id: h}}]
        """
    spec = parse(text)
    assert spec.nodes["h"].input_shapes == ((seq, dim),)
    assert spec.nodes["h"].output_shapes == ((seq, head_dim),)
    assert spec.num_parameters() == 3 * head_dim * dim


def test_attention_head_rejects_wrong_input_dim_and_odd_rope() -> None:
    """Wrong input_dim and odd head_dim with rope are both reported, one per node."""
    text = """\
        nodes:
          - {id: a, type: attention_head, config: {head_dim: 4, input_dim: 16, seq_len: 8}, input_shapes: [[8, 12]]}
          - {id: b, type: attention_head, config: {head_dim: 3, input_dim: 12, seq_len: 8}, input_shapes: [[8, 12]]}
        inputs: [{name: x, node_id: a}, {name: y, node_id: b}]
        """
    assert problems(text) == [
        "net.yml: nodes[0] 'a': input slot 0: expected last axis 16 (input_dim), got shape [8, 12]",
        "net.yml: nodes[1] 'b': rope needs an even head_dim, got 3",
    ]


def test_multihead_attention_shapes() -> None:
    """attention without output projection yields num_heads * head_dim features."""
    doc = mlp()
    node(doc, "act").update(type="attention", config={"num_heads": 3, "head_dim": 2, "dim": 8, "seq_len": 3,
                                                      "output_projection": False})
    node(doc, "fc2")["config"]["in_dim"] = 6
    assert parse(doc).nodes["act"].output_shapes == ((3, 6),)


# -- the CLI -----------------------------------------------------------------------------------------


def run_cli(*args: str) -> Result:
    """Run the `dcnr` command in-process, with stdout and stderr kept apart."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1"})


@pytest.mark.parametrize("text", [
    "nodes:\n  - {id: a, type: rleu}\n",
    "nodes: [\n",
    "- 1\n",
    "seed: 2001-13-01\n",
    "nodes: [{id: s, type: broadcast, config: {num_outputs: 1e300}}]\ninputs: [{name: x, node_id: s}]\n",
])
def test_cli_exits_2_without_traceback(tmp_path: Path, text: str) -> None:
    """`dcnr network validate` on a user error exits 2, names the file, prints no traceback."""
    path = tmp_path / "net.yml"
    path.write_text(text)
    result = run_cli("network", "validate", str(path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith(str(path))


def test_cli_subprocess_exit_code(tmp_path: Path) -> None:
    """The real `dcnr` process exits 2 on a bad file and prints the problem, no traceback."""
    path = tmp_path / "net.yml"
    path.write_text("name: t\nnodes:\n\t- {id: a}\n")
    code = "import sys; from dcnr.cli.main import main; sys.argv[0] = 'dcnr'; main()"
    result = subprocess.run([sys.executable, "-c", code, "network", "validate", str(path)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: line 3, column 1: invalid YAML" in " ".join(result.stderr.split())


def test_cli_accepts_a_valid_file(tmp_path: Path) -> None:
    """A valid file exits 0 and reports its VNode count on one line, even when the path is longer than the terminal."""
    deep = tmp_path / ("long-directory-name-" * 4) / "tiny_lm.yml"
    deep.parent.mkdir(parents=True)
    deep.write_text((EXAMPLES / "tiny_lm.yml").read_text())
    result = run_cli("network", "validate", str(deep))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    assert f"{deep}: ok" in result.stdout and "43 VNodes" in result.stdout


def test_cli_prints_one_line_per_problem(tmp_path: Path) -> None:
    """Each problem is printed verbatim on its own line, however long."""
    doc = mlp()
    node(doc, "fc2")["id"] = "a_rather_long_node_identifier_that_pushes_the_line_past_eighty_columns"
    node(doc, "a_rather_long_node_identifier_that_pushes_the_line_past_eighty_columns")["config"]["out_dim"] = "x"
    path = tmp_path / "net.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(NetworkError) as info:
        load_network(path)
    result = run_cli("network", "validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == info.value.problems


def test_public_api_exports() -> None:
    """The package root exports the loader entry points and the error type."""
    assert dcnr.parse_network is parse_network and dcnr.NetworkError is NetworkError
    assert issubclass(NetworkError, ValueError)
