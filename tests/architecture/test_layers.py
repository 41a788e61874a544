"""The layout is the architecture: only the transport speaks gRPC, and data flows one way."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dcnr"


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; `from x import y` gives `x` and `x.y`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def sources(*skip: str) -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not any(p.relative_to(PACKAGE).as_posix().startswith(s) for s in skip)]


def test_only_the_grpc_transport_imports_grpc_or_generated_code() -> None:
    offenders = []
    for path in sources("transport/grpc/", "proto/"):
        bad = sorted(m for m in imports(path)
                     if m == "grpc" or m.startswith("grpc.") or m.startswith("grpc_") or "_pb2" in m)
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE)}: {', '.join(bad)}")
    assert not offenders, "gRPC outside dcnr/transport/grpc:\n" + "\n".join(offenders)


def test_the_core_knows_nothing_of_transports_processes_or_files() -> None:
    """nodes/ and runtime/ may use the domain messages of the transport, nothing else of it, and nothing
    of the orchestrator, the PNode, storage or the CLI."""
    offenders = []
    for path in sorted((PACKAGE / "nodes").glob("*.py")) + sorted((PACKAGE / "runtime").glob("*.py")):
        for m in sorted(imports(path)):
            outer = m.startswith(("dcnr.orchestrator", "dcnr.pnode", "dcnr.cli", "dcnr.client"))
            transport = m.startswith("dcnr.transport") and not m.startswith("dcnr.transport.messages")
            if outer or transport:
                offenders.append(f"{path.relative_to(PACKAGE)}: {m}")
    assert not offenders, "\n".join(offenders)


def test_the_pnode_and_the_orchestrator_do_not_import_each_other() -> None:
    offenders = []
    for here, other in (("pnode", "dcnr.orchestrator"), ("orchestrator", "dcnr.pnode")):
        for path in sorted((PACKAGE / here).glob("*.py")):
            offenders += [f"{path.relative_to(PACKAGE)}: {m}" for m in sorted(imports(path)) if m.startswith(other)]
    assert not offenders, "\n".join(offenders)


HTTP_LIBRARIES = ("werkzeug", "cheroot", "prometheus_client", "http.server", "wsgiref", "flask")


def test_only_the_web_package_speaks_http() -> None:
    """HTTP libraries only in dcnr/web; of the orchestrator only `app` (which starts it) imports dcnr.web, and
    PNode metrics load nothing of the orchestrator."""
    offenders = []
    for path in sources("web/"):
        bad = sorted(m for m in imports(path) if any(m == lib or m.startswith(lib + ".") for lib in HTTP_LIBRARIES))
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE)}: {', '.join(bad)}")
    for path in sorted((PACKAGE / "orchestrator").glob("*.py")):
        if path.name != "app.py":
            offenders += [f"{path.relative_to(PACKAGE)}: {m}" for m in sorted(imports(path))
                          if m.startswith("dcnr.web")]
    for name in ("pnode_metrics.py", "server.py"):
        offenders += [f"web/{name}: {m}" for m in sorted(imports(PACKAGE / "web" / name))
                      if m.startswith(("dcnr.orchestrator", "dcnr.web.api", "dcnr.web.metrics", "dcnr.web.views"))]
    assert not offenders, "HTTP outside dcnr/web, or the PNode's metrics loading the orchestrator:\n" + "\n".join(
        offenders)
