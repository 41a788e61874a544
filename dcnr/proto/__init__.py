"""The wire protocol: `.proto` files (package `dcnr.v2`) and their committed generated code.

Owns: the public protobuf schemas, the generated `*_pb2.py` / `*_pb2_grpc.py` /
`*.pyi` modules (regenerate with `python -m dcnr.proto.generate`; a test fails when
they are stale) and the protocol version (`version`). Only `dcnr.transport.grpc`
imports the generated modules; it also holds the one codec of tensors to messages.
Must never import the runtime, the orchestrator or the PNode.
"""
