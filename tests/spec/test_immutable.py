"""A validated network cannot change: every later stage reads exactly what was validated."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from dcnr import parse_network
from dcnr.nodes.base import NodeType
from dcnr.spec.model import NodeSpec

NETWORK = """\
name: frozen
nodes:
  - {id: split, type: broadcast, config: {num_outputs: 2}}
  - {id: a, type: linear, config: {in_dim: 4, out_dim: 4}}
  - {id: join, type: add}
edges:
  - {from: split, to: a, from_slot: 0}
  - {from: a, to: join, to_slot: 0}
  - {from: split, to: join, from_slot: 1, to_slot: 1}
inputs: [{name: x, node_id: split}]
outputs: [{name: y, node_id: join}]
"""


def test_network_and_node_specs_refuse_assignment() -> None:
    """The dataclasses are frozen: assigning a field raises."""
    spec = parse_network(NETWORK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.nodes["a"].type = "relu"  # type: ignore[misc]


def test_nodes_mapping_is_read_only() -> None:
    """`spec.nodes` cannot gain, lose or replace a node."""
    spec = parse_network(NETWORK)
    nodes: Any = spec.nodes
    with pytest.raises(TypeError):
        nodes["b"] = spec.nodes["a"]
    with pytest.raises(TypeError):
        del nodes["a"]
    assert list(spec.nodes) == ["split", "a", "join"]


def test_spec_does_not_share_the_callers_dict() -> None:
    """Building a spec from a dict copies it: changing that dict afterwards changes nothing."""
    spec = parse_network(NETWORK)
    mine: dict[str, NodeSpec] = dict(spec.nodes)
    copy = dataclasses.replace(spec, nodes=mine)
    mine.clear()
    assert list(copy.nodes) == ["split", "a", "join"]


@pytest.mark.parametrize(("attr", "value"), [("num_inputs", 5), ("cfg", None), ("node_id", "b"),
                                             ("vocabulary_source", str)])
def test_node_impl_refuses_assignment(attr: str, value: Any) -> None:
    """A node type instance cannot be changed or extended after validation (no injected hooks)."""
    impl: NodeType = parse_network(NETWORK).nodes["join"].impl
    with pytest.raises(AttributeError, match=r"node 'join' is immutable once validated"):
        setattr(impl, attr, value)
    with pytest.raises(AttributeError, match=r"node 'join' is immutable once validated"):
        delattr(impl, "num_inputs")
    assert impl.num_inputs == 2 and impl.node_id == "join"


def test_node_config_refuses_assignment() -> None:
    """A node's config model is frozen too."""
    cfg: Any = parse_network(NETWORK).nodes["a"].config
    with pytest.raises(ValidationError, match="frozen"):
        cfg.out_dim = 8
    assert cfg.out_dim == 4


def test_edge_counted_slots_are_fixed_at_construction() -> None:
    """An add's slot count comes from its edges and is part of the node as built, not assigned later."""
    spec = parse_network(NETWORK)
    assert spec.nodes["join"].impl.num_inputs == 2
    assert len(spec.nodes["join"].input_shapes) == 2
