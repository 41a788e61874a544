"""The wire protocol: `.proto` files (package `dcnr.v1`) and their committed generated code.

Owns: the public protobuf schemas, the generated `*_pb2.py` / `*_pb2_grpc.py` /
`*.pyi` modules (regenerate with `python -m dcnr.proto.generate`; a test fails when
they are stale), the protocol version, and the one module that converts tensors
to and from messages (`codec`). Nothing outside the transport layer imports
`*_pb2` modules. Must never import the runtime, the orchestrator or the PNode.
"""
