"""How much memory a VNode needs: the estimate placement and PNode budgets both use."""

from __future__ import annotations

import math

from dcnr.spec.model import NodeSpec

BYTES = {"float32": 4, "fp16": 2, "bf16": 2}
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}  # fp32 state tensors per parameter


def estimate_vnode_memory(node: NodeSpec, batch_size: int = 8) -> int:
    """Bytes a VNode needs: fp32 master + fp32 gradient + optimizer state per owned parameter,
    a low-precision compute copy when there is one, and the activations of one micro-batch."""
    tied = node.impl.tied()
    owned = sum(math.prod(s) for n, s in node.impl.param_shapes().items() if n not in tied)
    slots = OPTIMIZER_SLOTS.get(node.config.optimizer, 2) if owned else 0
    per_param = 4 * (2 + slots) + (BYTES[node.param_precision] if node.param_precision != "float32" else 0)
    act = BYTES[node.activation_precision]
    shapes = [s for s in (*node.input_shapes, *node.output_shapes) if s is not None]
    activations = batch_size * act * sum(math.prod(s) for s in shapes)
    return owned * per_param + activations
