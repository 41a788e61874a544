"""The semantic protocol version (SPEC §7) and the rule for accepting a peer's."""

from __future__ import annotations

from dcnr.errors import IncompatibleVersion

PROTOCOL_VERSION = (2, 3, 0)
VERSION_TEXT = ".".join(map(str, PROTOCOL_VERSION))


def check_compatible(major: int, minor: int, patch: int) -> None:
    """Refuse a different major version, explicitly, naming both versions.

    A missing version (all zero) is refused too: we never guess and downgrade.
    """
    if major != PROTOCOL_VERSION[0]:
        raise IncompatibleVersion(f"incompatible protocol version {major}.{minor}.{patch}: this peer speaks "
                                  f"{VERSION_TEXT} (major versions must match; upgrade the older side)")
