"""The `dcnr` command line: parse arguments, call the library, print results.

Owns: commands, exit codes, human tables and `--json` output. May import every
other dcnr package. Must never hold logic the library lacks: a command is a thin
call into `dcnr.spec`, `dcnr.runtime` or `dcnr.data`.
"""
