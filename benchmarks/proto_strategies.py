"""Hypothesis strategies for protobuf messages, built from their descriptors: a structure-aware fuzzer's generator.

`messages(descriptor)` draws messages of any type, field by field, each by its type:

- integers at and next to the edges of their width (0, ±1, 2**31, 2**32 - 1, 2**63 - 1, ...) and anywhere
  in it; enums by the numbers they declare and by numbers they do not (proto3 enums are open);
- floats including nan, ±inf, -0.0, the largest and the subnormal ones;
- strings: empty, any unicode (NUL, combining marks, right-to-left, astral planes), path-like
  ("../../etc/passwd"), format and injection patterns, and huge-ish (up to `HUGE` characters);
- bytes: random, empty, huge-ish, and PEM blocks whose base64 is random or cut short;
- repeated fields and maps of 0 to a few elements (now and then many), oneofs with at most one member set,
  nested messages down to `depth` levels (deeper ones are left empty);
- a message type named in `overrides` by the strategy given there: `tensors()` draws this project's
  `dcnr.v2.Tensor` with dtypes known and unknown, shapes of any rank with extreme extents (such as
  [0, 60000, 60000]) and data that fits dtype and shape exactly, nearly, or not at all.

`Seeds` mixes in what real state holds, so that a share of the messages gets past the first checks of a
server: known values by field (network names, run ids, VNode names, a valid tensor...), long seeded texts
cut or spliced, and whole valid messages with one field, however deep, replaced by a drawn value.

Every drawn message is valid protobuf (strings are UTF-8, integers fit their field), so it serializes;
the nonsense is in the values. Draw through hypothesis (`@given`, `st.data()`): with a fixed `@seed` and
no database the messages are the same on every run.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from dcnr.proto.v2 import common_pb2
from dcnr.transport.grpc.codec import DTYPES

HUGE = 1 << 20  # the longest huge-ish string or bytes value, in characters or bytes
LONG = (128, 1024, 16384)  # the lengths of a long repeated field or map

# -- scalars ------------------------------------------------------------------------------------------------
_EDGES = (0, 1, -1, 2, 7, 8, 255, 256, 2**15 - 1, 2**15, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
          2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**31) - 1, -(2**63), 60000)
_RANGES = {  # field type -> the values it holds
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_EDGES = (0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 2.0**53, 1e-7,
                2.0**31, 2.0**64)
_FLOAT32_EDGES = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 3.4028234663852886e38, 1.401298464324817e-45)

NASTY_STRINGS = (
    "", " ", "\x00", "a\x00b", "\n", "\t\r\n", ".", "..", "/", "../../etc/passwd", "/etc/passwd",
    "..\\..\\windows\\win.ini", "a/../../b", "./", "~/.ssh/id_rsa", "file:///etc/passwd", "%2e%2e%2fetc%2fpasswd",
    "s3://bucket/../key", "%s%s%n%x", "{0}{1}", "${HOME}", "{{7*7}}", "' OR '1'='1", "\"; DROP TABLE networks; --",
    "<script>alert(1)</script>", "\u202eevil", "\ufeffbom", "e\u0301\u0301\u0301", "\U0001f600\U0001f4a9",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "日本語", "ا", "-", "--help", "null", "None", "NaN", "-1", "0", "18446744073709551616",
    "127.0.0.1:0", "[::1]:65536", "localhost:99999", "host:", ":1", "a" * 64, "a" * 65, "A" * 4096,
)
SMALL_SIZES = (0, 1, 2, 63, 64, 65, 255, 256)
HUGE_SIZES = (4096, 65536, 1 << 18, HUGE)


def integers(field_type: int) -> SearchStrategy[int]:
    """Integers of a field type: its edges and those of smaller widths within it, or anywhere in its range."""
    lo, hi = _RANGES[field_type]
    edges = sorted({v for v in (*_EDGES, lo, hi, lo + 1, hi - 1) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def floats(width: Literal[32, 64] = 64) -> SearchStrategy[float]:
    """Floats of a width: nan, infinities, signed zeros, extremes, subnormals, or any."""
    edges = _FLOAT_EDGES if width == 64 else _FLOAT32_EDGES
    return st.one_of(st.sampled_from(edges), st.floats(width=width))


def _repeats(units: Sequence[Any], sizes: Sequence[int]) -> SearchStrategy[Any]:
    return st.builds(lambda unit, n: unit * n, st.sampled_from(tuple(units)), st.sampled_from(tuple(sizes)))


def strings(huge: bool = False) -> SearchStrategy[str]:
    """Text a server must survive: nasty constants, any unicode, repeats; with `huge`, up to `HUGE` characters."""
    units = ("A", "é", "../", "\x00", "\U0001f600", "a b\n")
    return st.one_of(st.sampled_from(NASTY_STRINGS), st.text(st.characters(codec="utf-8"), max_size=64),
                     _repeats(units, HUGE_SIZES if huge else SMALL_SIZES))


def pem_blocks() -> SearchStrategy[bytes]:
    """PEM-framed bytes: a label, base64 that decodes to nothing meaningful, cut anywhere (the end line too)."""
    labels = st.sampled_from(("CERTIFICATE", "CERTIFICATE REQUEST", "EC PRIVATE KEY", "PRIVATE KEY", "X509 CRL", ""))

    def frame(label: str, body: bytes, cut: float) -> bytes:
        text = (f"-----BEGIN {label}-----\n".encode() + base64.encodebytes(body)
                + f"-----END {label}-----\n".encode())
        return text[:int(len(text) * cut)]

    return st.builds(frame, labels, st.binary(max_size=512), st.sampled_from((1.0, 0.99, 0.5, 0.1)) | st.floats(0, 1))


def binaries(huge: bool = False) -> SearchStrategy[bytes]:
    """Bytes a server must survive: empty, random, repeats, PEM-framed; with `huge`, up to `HUGE` bytes."""
    units = (b"\x00", b"\xff", b"A", b"-----BEGIN ")
    return st.one_of(st.just(b""), st.binary(max_size=256), _repeats(units, HUGE_SIZES if huge else SMALL_SIZES),
                     pem_blocks())


def mutated_text(text: str) -> SearchStrategy[str]:
    """A known text cut short, with a line dropped, or with a nasty string spliced in."""
    lines = text.splitlines(keepends=True)

    def drop(i: int) -> str:
        return "".join(lines[:i] + lines[i + 1:])

    def splice(at: int, piece: str) -> str:
        return text[:at] + piece + text[at:]

    return st.one_of(
        st.integers(0, len(text)).map(lambda n: text[:n]),
        st.integers(0, max(0, len(lines) - 1)).map(drop),
        st.builds(splice, st.integers(0, len(text)), strings()),
    )


def mutated_bytes(data: bytes) -> SearchStrategy[bytes]:
    """Known bytes (a real certificate, say) cut short, or with one byte changed."""
    def flip(at: int, byte: int) -> bytes:
        if not data:
            return bytes([byte])
        at %= len(data)
        return data[:at] + bytes([byte]) + data[at + 1:]

    return st.one_of(st.integers(0, len(data)).map(lambda n: data[:n]),
                     st.builds(flip, st.integers(0, max(0, len(data) - 1)), st.integers(0, 255)))


# -- this project's tensors ------------------------------------------------------------------------------------
ITEMSIZE = {name: torch.empty((), dtype=dtype).element_size() for name, dtype in DTYPES.items()}
BOGUS_DTYPES = ("", "complex64", "complex32", "float", "FLOAT32", "float32 ", "float32\x00", "int4", "object",
                "torch.float32", "<f4", "uint64", "string")
SHAPES: tuple[tuple[int, ...], ...] = (
    (), (0,), (1,), (1, 8), (2, 8), (1, 8, 16), (0, 60000, 60000), (60000, 60000), (2**31,), (2**31, 2),
    (2**63 - 1,), (2**32 - 1, 2**32 - 1), (-1,), (1, -1), (0, -1), (3, 0, 2**63 - 1), (1,) * 16, (1,) * 17,
    (2,) * 31, (0,) * 64,
)


def tensors(huge: bool = False, dtypes: Sequence[str] = tuple(DTYPES)) -> SearchStrategy[common_pb2.Tensor]:
    """`dcnr.v2.Tensor` messages, valid or not: a dtype known or bogus, a shape from `SHAPES` or drawn (any rank,
    extents at the edges), and data of exactly the bytes dtype × shape needs (zeros, or a random pattern, so
    floats include nan and inf), one byte off, none, or random. Data that fits exactly is drawn up to 1 MiB
    with `huge`, else up to 4 KiB."""
    cap = HUGE if huge else 4096
    dims = st.one_of(st.sampled_from((0, 1, 2, 8, 16, 60000, 2**31, 2**63 - 1, -1, -(2**63))),
                     st.integers(0, 64), st.integers(-(2**63), 2**63 - 1))
    shapes = st.one_of(st.sampled_from(SHAPES), st.lists(dims, max_size=20).map(tuple))

    @st.composite
    def draw_tensor(draw: st.DrawFn) -> common_pb2.Tensor:
        dtype = draw(st.one_of(st.sampled_from(tuple(dtypes)), st.sampled_from(BOGUS_DTYPES)))
        shape = draw(shapes)
        count = math.prod(shape) if all(d >= 0 for d in shape) else -1
        need = count * ITEMSIZE.get(dtype, 4)
        fits = 0 <= need <= cap
        kind = draw(st.sampled_from(("exact", "exact", "short", "long", "none", "random")))
        if kind == "exact" and fits:
            pattern = draw(st.binary(min_size=1, max_size=16))
            data = (pattern * (need // len(pattern) + 1))[:need]
        elif kind in ("short", "long") and fits:
            data = bytes(max(0, need - 1)) if kind == "short" else bytes(need + 1)
        elif kind == "none":
            data = b""
        else:
            data = draw(st.binary(max_size=256))
        return common_pb2.Tensor(dtype=dtype, shape=list(shape), data=data)

    return draw_tensor()


# -- messages ------------------------------------------------------------------------------------------------
Override = Callable[[bool], SearchStrategy[Any]]  # a message type's own strategy, given whether it may be big


@dataclass(frozen=True)
class Seeds:
    """What real state holds, mixed into drawn messages so that calls get past a server's first checks.

    `values` maps a field, by full name ("dcnr.v2.PNodeRef.id") or by plain name ("network"), to values it may
    take (the full name wins): strings, bytes, integers, floats, messages of the field's type, or, for a
    repeated or map field, whole lists or dicts. About half the draws of a seeded field take a seed (a long
    text or bytes seed possibly mutated); the rest are drawn as usual.
    `requests` maps a message type's full name to valid messages of it: about half the messages of that
    type are one of them with one field (its own, or one of a message set in it) replaced by a drawn value
    or cleared, or, one time in eight, unchanged.
    """

    values: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    requests: Mapping[str, Sequence[Message]] = field(default_factory=dict)

    def for_field(self, f: FieldDescriptor) -> Sequence[Any]:
        found = self.values.get(f.full_name)
        return found if found is not None else self.values.get(f.name, ())


NO_SEEDS = Seeds()


class Generator:
    """Builds (and caches) the strategy of each message type it is asked for, with one set of seeds and
    overrides; `message(descriptor)` is the entry point.

    Size is bounded by construction: in a message drawn "big" (the top level) at most one field is big —
    a huge-ish string or bytes value, a long repeated field or map (of small elements), or a big nested
    message, which follows the same rule — and every other field is small. A message is thus at most a few
    MiB however deep it nests.
    """

    def __init__(self, seeds: Seeds = NO_SEEDS, overrides: Mapping[str, Override] | None = None,
                 depth: int = 6) -> None:
        self.seeds = seeds
        self.overrides = dict(overrides or {})
        self.depth = depth
        self._cache: dict[tuple[str, int, bool], SearchStrategy[Message]] = {}
        self._fields: dict[tuple[str, int, bool], SearchStrategy[Any]] = {}

    def message(self, desc: Descriptor, depth: int | None = None, big: bool = True) -> SearchStrategy[Message]:
        """Messages of type `desc`: fresh ones, and (with request seeds for it) valid ones with one field changed."""
        depth = self.depth if depth is None else depth
        key = (desc.full_name, depth, big)
        if key not in self._cache:
            self._cache[key] = self._build(desc, depth, big)
        return self._cache[key]

    def _build(self, desc: Descriptor, depth: int, big: bool) -> SearchStrategy[Message]:
        cls = GetMessageClass(desc)
        if desc.full_name in self.overrides:
            fresh: SearchStrategy[Message] = self.overrides[desc.full_name](big)
        elif depth <= 0:
            return st.builds(cls)
        else:
            fresh = self._fresh(desc, cls, depth, big)
        known = self.seeds.requests.get(desc.full_name, ())
        if not known:
            return fresh
        bases, unchanged = st.sampled_from(known), st.integers(0, 7)

        @st.composite
        def one_field_changed(draw: st.DrawFn) -> Message:
            msg = cls()
            msg.CopyFrom(draw(bases))
            if not draw(unchanged):  # now and then the valid message itself
                return msg
            owner, f = draw(st.sampled_from(_fields_in(msg, desc)))
            owner.ClearField(f.name)
            if draw(st.booleans()):
                _assign(owner, f, draw(self.field(f, depth - 1, big)))
            return msg

        return st.one_of(fresh, one_field_changed())

    def _fresh(self, desc: Descriptor, cls: Callable[[], Message], depth: int, big: bool) -> SearchStrategy[Message]:
        plain = [f for f in desc.fields if f.containing_oneof is None]
        oneofs = [st.sampled_from([None, *o.fields]) for o in desc.oneofs]
        small = {f.name: self.field(f, depth - 1) for f in desc.fields}
        large = {f.name: self.field(f, depth - 1, True) for f in desc.fields} if big else small
        candidates = st.sampled_from([None, *desc.fields] if big else [None])
        present = st.integers(0, 3)

        @st.composite
        def build(draw: st.DrawFn) -> Message:
            msg = cls()
            chosen = [f for group in oneofs if (f := draw(group)) is not None]
            bigger = draw(candidates)  # the one field that may be big
            for f in plain + chosen:
                if f in chosen or draw(present):  # a field is set three times out of four
                    _assign(msg, f, draw((large if f is bigger else small)[f.name]))
            return msg

        return build()

    def field(self, f: FieldDescriptor, depth: int, big: bool = False) -> SearchStrategy[Any]:
        """Values of one field: a list for a repeated field, a dict for a map."""
        key = (f.full_name, depth, big)
        if key not in self._fields:
            self._fields[key] = self._field(f, depth, big)
        return self._fields[key]

    def _field(self, f: FieldDescriptor, depth: int, big: bool) -> SearchStrategy[Any]:
        seeded = self.seeds.for_field(f)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key, value = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            return _collection(st.dictionaries, big, self.single(key, depth, False), self.single(value, depth, False),
                               seeded=seeded)
        if f.is_repeated:
            return _collection(st.lists, big, self.single(f, depth, False), seeded=seeded)
        return self.single(f, depth, big)

    def single(self, f: FieldDescriptor, depth: int, big: bool = False) -> SearchStrategy[Any]:
        """One value of a field's type (an element, for a repeated field)."""
        drawn = self._typed(f, depth, big)
        seeded = [v for v in self.seeds.for_field(f) if _fits(f, v)]
        if not seeded:
            return drawn
        options = [st.sampled_from(seeded)]
        long = [v for v in seeded if isinstance(v, (str, bytes)) and len(v) >= 64]
        if long:
            options.append(st.sampled_from(long).flatmap(
                lambda v: mutated_text(v) if isinstance(v, str) else mutated_bytes(v)))
        return st.one_of(st.one_of(*options), drawn)

    def _typed(self, f: FieldDescriptor, depth: int, big: bool) -> SearchStrategy[Any]:
        t = f.type
        if t == FieldDescriptor.TYPE_MESSAGE:
            return self.message(_message_type(f), depth, big)
        if t in _RANGES:
            return integers(t)
        if t == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None, "an enum field has its enum's descriptor"
            declared = [v.number for v in f.enum_type.values]
            return st.one_of(st.sampled_from(declared), integers(FieldDescriptor.TYPE_INT32))
        if t == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if t == FieldDescriptor.TYPE_DOUBLE:
            return floats(64)
        if t == FieldDescriptor.TYPE_FLOAT:
            return floats(32)
        if t == FieldDescriptor.TYPE_STRING:
            return st.one_of(strings(), strings(huge=True)) if big else strings()
        if t == FieldDescriptor.TYPE_BYTES:
            return st.one_of(binaries(), binaries(huge=True)) if big else binaries()
        raise TypeError(f"field {f.full_name}: type {t} is not supported (groups are proto2 only)")


def _collection(make: Callable[..., SearchStrategy[Any]], big: bool, *parts: SearchStrategy[Any],
                seeded: Sequence[Any] = ()) -> SearchStrategy[Any]:
    """A repeated field or map of a few elements or, if `big`, now and then of many (a few drawn ones
    repeated: a server must cope with the count, and drawing each would be slow); a seed given whole (a list
    or a dict) half the time."""
    drawn = make(*parts, max_size=4)
    if big:
        counts = st.sampled_from(LONG)
        if make is st.lists:
            many = st.builds(lambda few, n: (few * n)[:n], make(*parts, min_size=1, max_size=4), counts)
        else:
            many = st.builds(_spread, make(*parts, min_size=1, max_size=4), counts)
        drawn = st.one_of(drawn, many)
    whole = [v for v in seeded if isinstance(v, (list, tuple, dict))]
    return st.one_of(st.sampled_from(whole), drawn) if whole else drawn


def _spread(few: dict[Any, Any], n: int) -> dict[Any, Any]:
    """`n` entries from a few: the keys made distinct (numbered), the values repeated."""
    items = list(few.items())
    out: dict[Any, Any] = {}
    for i in range(n):
        k, v = items[i % len(items)]
        key = f"{k}{i}" if isinstance(k, str) else k if isinstance(k, bool) else (k + i) % 2**31
        out[key] = v
    return out


def _fields_in(msg: Message, desc: Descriptor) -> list[tuple[Message, FieldDescriptor]]:
    """Every field of `msg` (of type `desc`) and of the messages set in it (singular fields, and each element
    of a repeated one), as (the message holding it, the field): the places a valid message can be changed at."""
    found = [(msg, f) for f in desc.fields]
    for f in desc.fields:
        if f.type != FieldDescriptor.TYPE_MESSAGE or _message_type(f).GetOptions().map_entry:
            continue
        if f.is_repeated:
            for element in getattr(msg, f.name):
                found += _fields_in(element, _message_type(f))
        elif msg.HasField(f.name):
            found += _fields_in(getattr(msg, f.name), _message_type(f))
    return found


def _message_type(f: FieldDescriptor) -> Descriptor:
    assert f.message_type is not None, "a message field has its message's descriptor"
    return f.message_type


def _fits(f: FieldDescriptor, value: Any) -> bool:
    """Whether a seed is a value of the field's type (a seed list or dict is for the whole field instead)."""
    t = f.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        return isinstance(value, Message) and value.DESCRIPTOR.full_name == _message_type(f).full_name
    if t == FieldDescriptor.TYPE_STRING:
        return isinstance(value, str)
    if t == FieldDescriptor.TYPE_BYTES:
        return isinstance(value, bytes)
    if t in _RANGES:
        lo, hi = _RANGES[t]
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    if t == FieldDescriptor.TYPE_BOOL:
        return isinstance(value, bool)
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return isinstance(value, float)
    if t == FieldDescriptor.TYPE_ENUM:
        return isinstance(value, int) and not isinstance(value, bool)
    return False


def _assign(msg: Message, f: FieldDescriptor, value: Any) -> None:
    """Set field `f` of `msg` to `value` (a list for a repeated field, a dict for a map)."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        target = getattr(msg, f.name)
        target.clear()
        for k, v in value.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif f.is_repeated:
        target = getattr(msg, f.name)
        del target[:]
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            for v in value:
                target.add().CopyFrom(v)
        else:
            target.extend(value)
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, f.name).CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def messages(desc: Descriptor, seeds: Seeds = NO_SEEDS, overrides: Mapping[str, Override] | None = None,
             depth: int = 6) -> SearchStrategy[Message]:
    """Messages of type `desc`, every field drawn by its type (see the module docstring)."""
    return Generator(seeds, overrides, depth).message(desc)


def dcnr_overrides() -> dict[str, Override]:
    """This project's message types drawn by their own strategies rather than field by field."""
    return {common_pb2.Tensor.DESCRIPTOR.full_name: lambda big: tensors(huge=big)}
