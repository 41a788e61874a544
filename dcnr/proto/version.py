"""The semantic protocol version every registration and hop carries (SPEC §7)."""

from __future__ import annotations

from dcnr.errors import IncompatibleVersion
from dcnr.proto.v1 import common_pb2

PROTOCOL_VERSION = (1, 0, 0)


def version_message() -> common_pb2.ProtocolVersion:
    major, minor, patch = PROTOCOL_VERSION
    return common_pb2.ProtocolVersion(major=major, minor=minor, patch=patch)


def check_compatible(peer: common_pb2.ProtocolVersion) -> None:
    """Refuse a different major version, explicitly, naming both versions.

    A missing version (all zero) is refused too: we never guess and downgrade.
    """
    mine = ".".join(map(str, PROTOCOL_VERSION))
    theirs = f"{peer.major}.{peer.minor}.{peer.patch}"
    if peer.major != PROTOCOL_VERSION[0]:
        raise IncompatibleVersion(f"incompatible protocol version {theirs}: this peer speaks {mine} "
                                  f"(major versions must match)")
