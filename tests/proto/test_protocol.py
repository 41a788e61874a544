"""The wire format: committed generated code is fresh; tensors round-trip exactly; bad
messages are clean `CodecError`s; incompatible versions are refused."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcnr.errors import IncompatibleVersion
from dcnr.proto.v2 import common_pb2
from dcnr.proto.version import PROTOCOL_VERSION
from dcnr.transport.grpc import codec


def test_generated_code_is_not_stale() -> None:
    """Regenerating from the .proto files gives exactly the committed modules."""
    res = subprocess.run([sys.executable, "-m", "dcnr.proto.generate", "--check"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr


@settings(max_examples=150, deadline=None)
@given(dtype=st.sampled_from(sorted(codec.DTYPES)), shape=st.lists(st.integers(0, 5), max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_tensor_round_trip_is_bit_exact(dtype: str, shape: list[int], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(codec.DTYPES[dtype])
    msg = codec.encode_tensor(t)
    again = codec.decode_tensor(common_pb2.Tensor.FromString(msg.SerializeToString()))
    assert again.dtype == t.dtype and list(again.shape) == shape
    assert torch.equal(_bytes(again), _bytes(t))


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)

def test_little_endian_layout_is_the_documented_one() -> None:
    msg = codec.encode_tensor(torch.tensor([1.0, -2.0], dtype=torch.float32))
    assert msg.dtype == "float32" and list(msg.shape) == [2]
    assert msg.data == bytes.fromhex("0000803f000000c0")


def test_non_contiguous_and_scalar_tensors() -> None:
    t = torch.arange(12, dtype=torch.int64).reshape(3, 4).t()
    assert torch.equal(codec.decode_tensor(codec.encode_tensor(t)), t)
    s = torch.tensor(3.5)
    assert torch.equal(codec.decode_tensor(codec.encode_tensor(s)), s)


@pytest.mark.parametrize("msg, message", [
    (common_pb2.Tensor(dtype="float128", shape=[1], data=b"\0" * 16), "unknown dtype 'float128'"),
    (common_pb2.Tensor(dtype="float32", shape=[2, 3], data=b"\0" * 23), "needs 24"),
    (common_pb2.Tensor(dtype="int64", shape=[-1], data=b""), "invalid shape"),
    (common_pb2.Tensor(dtype="int8", shape=[1] * 17, data=b"\0"), "invalid shape"),
    (common_pb2.Tensor(dtype="float32", shape=[0, 60000, 60000], data=b""), "too large"),  # empty, yet huge
    (common_pb2.Tensor(dtype="bool", shape=[2**31, 2], data=b""), "too large"),
])
def test_bad_tensors_are_codec_errors(msg: common_pb2.Tensor, message: str) -> None:
    with pytest.raises(codec.CodecError, match=message):
        codec.decode_tensor(msg)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(raw: bytes) -> None:
    """Whatever a peer sends: a tensor, a CodecError, or a protobuf DecodeError — nothing else."""
    from google.protobuf.message import DecodeError

    try:
        msg = common_pb2.Tensor.FromString(raw)
    except DecodeError:
        return
    with contextlib.suppress(codec.CodecError):
        codec.decode_tensor(msg)


def test_values_carry_tensors_and_text() -> None:
    assert codec.decode_value(codec.encode_value(["a", "bé"])) == ["a", "bé"]
    assert torch.equal(codec.decode_value(codec.encode_value(torch.ones(2))), torch.ones(2))
    with pytest.raises(codec.CodecError):
        codec.encode_value({"not": "sendable"})
    with pytest.raises(codec.CodecError, match="empty value"):
        codec.decode_value(common_pb2.Value())


def test_protocol_versions() -> None:
    assert PROTOCOL_VERSION[0] == 2, "the step protocol of this release is major version 2"
    codec.check_version(codec.version_message())
    major = PROTOCOL_VERSION[0]
    codec.check_version(common_pb2.ProtocolVersion(major=major, minor=99))  # newer minor: compatible
    for bad in (common_pb2.ProtocolVersion(major=major + 1), common_pb2.ProtocolVersion(major=1),
                common_pb2.ProtocolVersion()):
        with pytest.raises(IncompatibleVersion) as info:
            codec.check_version(bad)
        assert f"{bad.major}.{bad.minor}.{bad.patch}" in str(info.value)
        assert ".".join(map(str, PROTOCOL_VERSION)) in str(info.value)
