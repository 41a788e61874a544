"""The transport boundary: domain messages, the small interfaces the runtime needs, and
their implementations.

Owns: how the orchestrator, PNodes and clients reach each other. `messages` (plain data)
and `interfaces` (`PNodeClient`, `HopTransport`, `OrchestratorLink`, `Connector`,
`MembershipService`) are what the driver, sessions, checkpoints and the PNode work loop
speak. Implementations: `grpc/` — the only code in DCNR that imports `grpc` or the
generated protobuf modules: servers that map protobuf to calls on the orchestrator's
services or a `PNodeRuntime` and back, clients, the tensor codec, and our errors
(`dcnr.errors`) as gRPC statuses and back; `memory` (the same protocol inside one process,
for fast tests); `shaping` (per-link latency, bandwidth and jitter around any hop
transport). May import `dcnr.errors`, `dcnr.proto`, `dcnr.storage` and, to serve them, the
orchestrator's services and the PNode runtime. Must never decide placement, drive steps or
compute the model.
"""
