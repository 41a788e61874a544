"""The orchestrator: PNode registry, placement, networks, sessions, durable state.

Owns: what the control plane remembers (`store`), where VNodes live, and driving
training sessions. May import `dcnr.spec`, `dcnr.data`, `dcnr.proto` and
`dcnr.storage`. Must never compute the model: tensors only pass through it.
"""
