"""DCNR: the Distributed Composable Neural Runtime.

The public API: `load_network` (YAML -> validated spec), `NetworkError`,
`LocalExecutor` (train and run a network in-process by message passing), and
`Client` (the typed API of a running orchestrator).

Importing `dcnr` (or any module in it) loads none of these: each is imported on first
use (PEP 562), so a process that never touches a tensor, such as an idle PNode, never
loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dcnr.client import Client
    from dcnr.errors import NetworkError
    from dcnr.runtime.executor import LocalExecutor
    from dcnr.spec.loader import load_network, parse_network
    from dcnr.spec.model import NetworkSpec

__version__ = "0.1.0"

__all__ = ["Client", "LocalExecutor", "NetworkError", "NetworkSpec", "__version__", "load_network", "parse_network"]

_EXPORTS = {  # public name -> the module that defines it
    "Client": "dcnr.client",
    "LocalExecutor": "dcnr.runtime.executor",
    "NetworkError": "dcnr.errors",
    "NetworkSpec": "dcnr.spec.model",
    "load_network": "dcnr.spec.loader",
    "parse_network": "dcnr.spec.loader",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dcnr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
