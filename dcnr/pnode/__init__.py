"""The PNode: a volunteer's worker process hosting VNodes.

Owns: the local registry of hosted VNodes (`host`), the work loop that runs them and
routes their messages through the shared router, commits to digests of what they do and
re-executes other PNodes' work as a verifier (`runtime`), what it accepts from peers
and how much it holds for them (`limits`), this PNode's membership (`agent`), what the
machine offers (`hardware`) and the moment the runtime is made: when the first VNode
arrives, so an idle PNode never loads torch (`lazy`); what it shares with its own machine:
status file and pause switch (`status`), and how `dcnr join` sizes it and keeps its
settings (`settings`). May import `dcnr.runtime`, `dcnr.spec`, `dcnr.errors`,
`dcnr.validation`, the transport's messages and interfaces, and `dcnr.storage.files` (the
atomic writer, for what it keeps in its state directory); `agent` wires in the gRPC
transport, and imports nothing that loads torch. Must never recover VNodes after a crash (the
orchestrator does), run anything but the node catalog, unpickle what it gets, or read a
file a network names.
"""
