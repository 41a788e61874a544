"""The transport boundary: domain messages, the small interfaces the runtime needs, and
their implementations.

Owns: how the orchestrator, PNodes and clients reach each other. `dcnr/transport/grpc/`
is the only code in DCNR that imports `grpc` or the generated protobuf modules: it maps
protobuf to domain calls and back, and our errors (`dcnr.errors`) to gRPC statuses and
back. May import `dcnr.errors`, `dcnr.proto` and the domain types it carries. Must never
decide placement, drive steps or compute the model.
"""
