"""gRPC implementations of the transport interfaces, and the servers' adapters.

The only package that imports `grpc` and `dcnr.proto.v*` generated modules.
"""
