"""The PNode: a volunteer's worker process hosting VNodes.

Owns: the local registry of hosted VNodes (`host`), the gRPC services a PNode
serves (`service`), and its limits. May import `dcnr.runtime`, `dcnr.spec` and
`dcnr.proto` (the transport). Must never recover VNodes after a crash (the
orchestrator does), run anything but the node catalog, or unpickle what it gets.
"""
