"""Tensors, values and protocol versions to and from protobuf messages: the only place that does it.

A tensor travels as dtype name + shape + raw little-endian bytes in C order
(SPEC §7). Decoding checks everything a peer could get wrong before allocating
anything (a dtype of `DTYPES`, at most `MAX_RANK` non-negative axes, an extent of at
most `MAX_ELEMENTS`, exactly as many bytes as dtype and shape need), so a bad message
is a `CodecError` (answered as INVALID_ARGUMENT), never a crash, a huge empty tensor
or an unpickle. Whether a value fits the slot it is sent to is the PNode's check.

torch is imported by the first tensor converted, not with this module: every gRPC client
and server of ours imports this module, and a process that moves no tensor (a PNode that
hosts nothing yet, most CLI commands) should not pay for loading torch.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import TYPE_CHECKING, Any

from dcnr.errors import InvalidArgument
from dcnr.proto.v2 import common_pb2, node_pb2
from dcnr.proto.version import PROTOCOL_VERSION, check_compatible

if TYPE_CHECKING:
    import torch

# the dtypes that travel, by their torch names; `DTYPES` maps them to torch dtypes, `NAMES` back
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_RANK = 16
# elements of one tensor, and its extent with empty axes counted as one: no message (< 2 GiB) carries
# more, and an empty [0, 60000, 60000] must not pass for small (a node may allocate [60000, 60000] for it)
MAX_ELEMENTS = 2**31


class CodecError(InvalidArgument):
    """A message does not describe a valid tensor or value."""


@functools.cache
def _dtypes() -> dict[str, torch.dtype]:
    import torch

    return {name: getattr(torch, name) for name in DTYPE_NAMES}


@functools.cache
def _names() -> dict[torch.dtype, str]:
    return {dtype: name for name, dtype in _dtypes().items()}


def __getattr__(name: str) -> Any:
    """`DTYPES` and `NAMES`, made (importing torch) when first asked for."""
    if name == "DTYPES":
        return _dtypes()
    if name == "NAMES":
        return _names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode_tensor(t: torch.Tensor) -> common_pb2.Tensor:
    import torch

    name = _names().get(t.dtype)
    if name is None:
        raise CodecError(f"dtype {t.dtype} cannot travel; supported: {', '.join(DTYPE_NAMES)}")
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return common_pb2.Tensor(dtype=name, shape=list(t.shape), data=b"")
    raw = t.reshape(-1).view(torch.uint8)  # flat C order: stride 1, as view() needs
    if sys.byteorder != "little" and t.element_size() > 1:
        raw = raw.reshape(-1, t.element_size()).flip(1).reshape(-1)
    return common_pb2.Tensor(dtype=name, shape=list(t.shape), data=raw.numpy().tobytes())


def decode_tensor(msg: common_pb2.Tensor) -> torch.Tensor:
    import torch

    dtype = _dtypes().get(msg.dtype)
    if dtype is None:
        raise CodecError(f"unknown dtype {msg.dtype!r}; supported: {', '.join(DTYPE_NAMES)}")
    shape = list(msg.shape)
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise CodecError(f"invalid shape {shape}: at most {MAX_RANK} non-negative axes")
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        raise CodecError(f"shape {shape} is too large: at most {MAX_ELEMENTS} elements, empty axes counted as one")
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = math.prod(shape)
    if len(msg.data) != count * itemsize:
        raise CodecError(f"tensor data has {len(msg.data)} bytes, but {msg.dtype} × {shape} needs {count * itemsize}")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(bytearray(msg.data), dtype=torch.uint8)
    if sys.byteorder != "little" and itemsize > 1:
        raw = raw.reshape(-1, itemsize).flip(1).reshape(-1).contiguous()
    return raw.view(dtype).reshape(shape)


def encode_value(value: Any) -> common_pb2.Value:
    """A tensor, or a list of strings (text for tokenizer nodes)."""
    import torch

    if isinstance(value, torch.Tensor):
        return common_pb2.Value(tensor=encode_tensor(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return common_pb2.Value(text=common_pb2.TextBatch(items=list(value)))
    raise CodecError(f"cannot send a {type(value).__name__}: expected a tensor or a list of strings")


def decode_value(msg: common_pb2.Value) -> Any:
    kind = msg.WhichOneof("kind")
    if kind == "tensor":
        return decode_tensor(msg.tensor)
    if kind == "text":
        return list(msg.text.items)
    raise CodecError("empty value: expected a tensor or text")


def version_message() -> common_pb2.ProtocolVersion:
    major, minor, patch = PROTOCOL_VERSION
    return common_pb2.ProtocolVersion(major=major, minor=minor, patch=patch)


def check_version(peer: common_pb2.ProtocolVersion) -> None:
    """`IncompatibleVersion` unless the peer speaks our major version (a missing version is refused too)."""
    check_compatible(peer.major, peer.minor, peer.patch)


HARDWARE_FIELDS = ("cpu_cores", "memory_bytes", "device", "memory_budget_bytes", "threads", "compute_class")


def hardware_message(hw: dict[str, Any]) -> node_pb2.Hardware:
    """A PNode's hardware record (as the orchestrator stores it) as a message; missing keys are zero."""
    return node_pb2.Hardware(**{k: hw.get(k, _UNSET.get(k, 0)) for k in HARDWARE_FIELDS})


_UNSET: dict[str, Any] = {"device": "cpu", "compute_class": ""}


def hardware_record(msg: node_pb2.Hardware) -> dict[str, Any]:
    """The inverse of `hardware_message` (an unset device is the CPU)."""
    record: dict[str, Any] = {k: getattr(msg, k) for k in HARDWARE_FIELDS}
    record["device"] = record["device"] or "cpu"
    return record
