"""Executing a network: VNodes, the router, request ids, micro-batches, optimizers, precision.

Owns: the VNode agent (inbox per request id, cache, own parameters, optimizer,
ordered gradient accumulation), the router that says what a VNode's result emits (shared
by the in-process `LocalExecutor` and the PNode), the graph facts both need, and the
`LocalExecutor`. May import `dcnr.spec`, `dcnr.nodes`, the transport's domain messages
(`dcnr.transport.messages`, plain data), torch and safetensors; `LocalExecutor.save` and
`load` go through `dcnr.artifact` and `dcnr.storage.files`. Must never import gRPC or know
where a VNode runs: the PNode calls the same router with the same messages.
"""

from dcnr.runtime.executor import LocalExecutor
from dcnr.runtime.vnode import RequestId, VNode

__all__ = ["LocalExecutor", "RequestId", "VNode"]
