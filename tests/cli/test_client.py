"""dcnr.Client covers the whole control plane, and keeps gRPC out of its own module."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import dcnr.client
from dcnr.proto.v2 import orchestrator_pb2
from dcnr.transport.grpc.control_client import GrpcControl


def test_every_orchestrator_rpc_has_a_client_call() -> None:
    source = inspect.getsource(GrpcControl)
    rpcs = [m.name for m in orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].methods]
    assert len(rpcs) > 30
    assert [r for r in rpcs if f'"{r}"' not in source] == []


def test_the_client_module_imports_no_grpc_and_no_generated_code() -> None:
    tree = ast.parse(Path(dcnr.client.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.split(".")[0] == "grpc" or "_pb2" in m or "proto" in m]
