"""The network language: YAML text -> a validated, immutable `NetworkSpec`.

Owns: parsing, the error type users see (`NetworkError`), graph checks (ids, edges,
slots, cycles, ties), shape inference over the graph (symbolic where the configs fix no
size), warnings for keys set to no effect, and the SPEC §6 passes (`passes.plan`: the graph
that is executed, derived from the written one). May import `dcnr.nodes` for each type's
config model and shape rule. Must never touch tensors, files other than the one it
is asked to read, or anything about execution or transport.
"""

from dcnr.errors import NetworkError
from dcnr.spec.loader import load_network, parse_network
from dcnr.spec.model import Binding, Edge, NetworkSpec, NodeSpec

__all__ = [
    "Binding",
    "Edge",
    "NetworkError",
    "NetworkSpec",
    "NodeSpec",
    "load_network",
    "parse_network",
]
