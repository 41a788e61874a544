"""Every way a `dcnr` command ends, with its number. Scripts may rely on these."""

OK = 0  # the command did what was asked
RUNTIME_FAILURE = 1  # something broke while running (a bug, a resource problem); --verbose shows the traceback
USER_ERROR = 2  # bad input: a network file, an argument, a path; the message says what to change
INTERRUPTED = 130  # stopped with Ctrl-C; nothing half-written is left behind
