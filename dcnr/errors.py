"""The one error type a user sees for a bad network definition."""

from __future__ import annotations


class NetworkError(ValueError):
    """A network definition is invalid.

    `problems` holds every problem found, one line each, already prefixed with the
    file and the location (node, edge or key), so a CLI prints them as they are.
    """

    def __init__(self, problems: list[str]) -> None:
        assert problems, "NetworkError needs at least one problem"
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ConfigValueError(ValueError):
    """One config value is wrong; the loader adds file and node to the message."""


class ShapeError(ValueError):
    """A node type cannot accept the shapes it is given; raised by shape rules."""
