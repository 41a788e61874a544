"""The orchestrator: PNode registry, placement, networks, sessions, serving, durable state.

Owns: what the control plane remembers (`store`), where VNodes live, the standing of
PNodes (`standing`: trust, charges, quarantine), judging untrusted work (`validator`:
commitments cross-checked, units drawn and re-executed by verifiers, faults to roll back
from), driving training sessions, and what each
request means (`networks`, `serving`, `datasets`, `blob_access`: domain calls that return
domain objects). May import `dcnr.errors`, `dcnr.spec`, `dcnr.runtime`, `dcnr.data`,
`dcnr.storage`, `dcnr.validation` and the transport's messages and interfaces (PNodes are
reached through a `PNodeClient`); `app`, which wires it together, starts
`dcnr.transport.grpc.server`. Must never compute the model: tensors only pass through it.
"""
