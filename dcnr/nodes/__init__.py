"""The node catalog (SPEC §4): one file per node type, one explicit registry table.

Owns: each type's config model, shape rule, parameter shapes and initial values,
forward and backward math. May import torch, pydantic, `dcnr.errors` and `dcnr.shapes`
(the shape language its rules speak). Must never touch files (except a vocabulary a tokenizer node
names), gRPC, other VNodes, or execution order: that is `dcnr.runtime`.
"""

from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.registry import NODE_TYPES, canonical_type, suggest_type

__all__ = ["NODE_TYPES", "Context", "NodeConfig", "NodeType", "Shape", "canonical_type", "suggest_type"]
