"""Validation of untrusted work: what makes a PNode's result checkable, and the checks.

Owns the digests PNodes commit to (`digest`), the validation policy of a session
(`policy`), deterministic re-execution of one work unit from its committed state and
inputs (`replay`), and the cheap checks run on every report (`invariants`, including
Freivalds' check for matrix products). It may import `dcnr.runtime`, `dcnr.nodes`,
`dcnr.spec` and the transport's domain messages; it must not import the orchestrator,
the PNode or any transport: the orchestrator decides what to sample and whom to believe
(`dcnr.orchestrator.validator`), PNodes commit and re-execute through these functions.
"""
