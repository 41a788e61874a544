"""The `dcnr` command line: parse arguments, call the library, print results.

Owns: commands (one module per command group, listed once in `main.COMMANDS`), how
a failing command ends (one line, the exit code of its `dcnr.errors` class), human
tables and `--json` output. May import every other dcnr package, but never `grpc` or
protobuf modules: commands that talk to an orchestrator go through `dcnr.Client`,
`network validate`/`analyze` through `dcnr.spec`, the demo through
`dcnr.cluster`. Must never hold logic the library lacks.
"""
