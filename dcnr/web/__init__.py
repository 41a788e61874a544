"""HTTP: Prometheus metrics, the orchestrator's dashboard API and the dashboard's files.

Owns everything that speaks HTTP: the threaded server (`server`: cheroot, started and
stopped with the process that owns it), the metrics of an orchestrator and of a PNode
(`metrics`: collected from the state they already keep, each in a registry of its own), the
JSON API of the dashboard and its routes, bearer tokens and static files (`api`, with the
JSON shapes in `views`). May import `dcnr.orchestrator` (its services are read, never
changed behind them), `dcnr.security` (tokens and the one authorization table), `dcnr.errors`
and the transport's domain messages; never gRPC or generated code. Nothing outside this
package imports an HTTP library: the orchestrator's `app` and the PNode's agent start what
is here.
"""
