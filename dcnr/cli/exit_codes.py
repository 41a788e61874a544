"""Every way a `dcnr` command ends, with its number (defined with the errors that cause them)."""

from dcnr.errors import INTERRUPTED, OK, RUNTIME_FAILURE, USER_ERROR

__all__ = ["INTERRUPTED", "OK", "RUNTIME_FAILURE", "USER_ERROR"]
