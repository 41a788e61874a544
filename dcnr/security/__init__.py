"""Who is calling, and what they may do: identities, certificates, tokens and the roles table.

Owns the orchestrator's certificate authority and the certificates it issues, PNode key
pairs and the ids derived from them, operator and researcher tokens (stored hashed),
the client configuration file, and the one table saying which role may call which RPC.
It knows nothing of gRPC: `dcnr.transport.grpc.security` turns these into channel and
server credentials and checks every call against `authorization.RULES`.
"""
