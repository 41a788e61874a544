"""DCNR: the Distributed Composable Neural Runtime.

The public API: `load_network` (YAML -> validated spec), `NetworkError`,
`LocalExecutor` (train and run a network in-process by message passing), and
`Client` (the typed API of a running orchestrator).
"""

from dcnr.client import Client
from dcnr.errors import NetworkError
from dcnr.runtime.executor import LocalExecutor
from dcnr.spec.loader import load_network, parse_network
from dcnr.spec.model import NetworkSpec

__version__ = "0.1.0"

__all__ = ["Client", "LocalExecutor", "NetworkError", "NetworkSpec", "__version__", "load_network", "parse_network"]
