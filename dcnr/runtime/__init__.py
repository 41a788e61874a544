"""Executing a network: VNodes, request ids, micro-batches, optimizers, precision.

Owns: the VNode agent (inbox per request id, cache, own parameters, optimizer,
ordered gradient accumulation) and the in-process `LocalExecutor` that routes
messages between VNodes. May import `dcnr.spec` and `dcnr.nodes`, torch and
safetensors. Must never import gRPC or know where a VNode runs: a transport (the
PNode) calls the same VNode methods with the same messages.
"""

from dcnr.runtime.executor import LocalExecutor
from dcnr.runtime.vnode import RequestId, VNode

__all__ = ["LocalExecutor", "RequestId", "VNode"]
