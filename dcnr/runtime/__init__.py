"""Executing a network: VNodes, the router, request ids, micro-batches, optimizers, precision.

Owns: the VNode agent (inbox per request id, cache, own parameters, optimizer,
ordered gradient accumulation), the router that says what a VNode's result emits (shared
by the in-process `LocalExecutor` and the PNode), the graph facts both need, and the
`LocalExecutor`. May import `dcnr.spec`, `dcnr.nodes`, the transport's domain messages
(`dcnr.transport.messages`, plain data), torch and safetensors; `LocalExecutor.save` and
`load` go through `dcnr.artifact` and `dcnr.storage.files`. Must never import gRPC or know
where a VNode runs: the PNode calls the same router with the same messages.

The package's exports are imported on first use (PEP 562), so a light module here (the
allocator tuning a PNode applies at start) does not load torch with the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dcnr.runtime.executor import LocalExecutor
    from dcnr.runtime.vnode import RequestId, VNode

__all__ = ["LocalExecutor", "RequestId", "VNode"]

_EXPORTS = {"LocalExecutor": "dcnr.runtime.executor", "RequestId": "dcnr.runtime.vnode", "VNode": "dcnr.runtime.vnode"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dcnr.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
