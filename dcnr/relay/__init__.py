"""A relay process (`dcnr relay`): carries the traffic of PNodes that accept no connections.

Owns the relay's identity (a key in its state directory and a relay certificate, which the
orchestrator issues only to an operator's token), its RelayService port, its membership at
the orchestrator (registration, heartbeats with the PNodes attached and the bytes carried,
certificate renewal) and its shutdown. The forwarding itself is `dcnr.transport.grpc.relay`.
It must not decide which PNodes attach to it: the orchestrator does.
"""
