"""Config value types shared by the node catalog.

Config values may be quoted strings (the upstream format writes `dim: "64"`) or
plain YAML scalars; list-valued keys may be YAML lists or strings like `"[2, 4]"`.
Each type below parses both and fails with a message of the form
`expected <what>, got <value>` that the loader places after the key.
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator

PRECISION_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


INT64_MAX = 2**63 - 1  # no size, slot, axis or seed is larger than an int64


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """A bounded repr for messages: never huge, never raises, whatever the value."""
    try:
        shown = _REPR.repr(value)
    except ValueError:  # an int too long for str() (sys.get_int_max_str_digits)
        shown = f"an integer of {value.bit_length()} bits"
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fail(what: str, value: Any) -> ValueError:
    return ValueError(f"expected {what}, got {short_repr(value)}")


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise _fail(what, value)
    n: int | None = None
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value.strip())
        except ValueError:
            n = None
    if n is None:
        raise _fail(what, value)
    if abs(n) > INT64_MAX:
        raise _fail(f"{what} of at most {INT64_MAX}", value)
    return n


def _positive_int(value: Any) -> int:
    n = _as_int(value, "a positive integer")
    if n <= 0:
        raise _fail("a positive integer", value)
    return n


def _non_negative_int(value: Any) -> int:
    n = _as_int(value, "a non-negative integer")
    if n < 0:
        raise _fail("a non-negative integer", value)
    return n


def _int(value: Any) -> int:
    return _as_int(value, "an integer")


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise _fail(what, value)
    if isinstance(value, (int, float)):
        try:
            out = float(value)
        except OverflowError:  # an int beyond float range
            raise _fail(what, value) from None
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise _fail(what, value) from None
    else:
        raise _fail(what, value)
    if out != out or out in (float("inf"), float("-inf")):
        raise _fail(what, value)
    return out


def _float(value: Any) -> float:
    return _as_float(value, "a number")


def _positive_float(value: Any) -> float:
    x = _as_float(value, "a positive number")
    if x <= 0:
        raise _fail("a positive number", value)
    return x


def _non_negative_float(value: Any) -> float:
    x = _as_float(value, "a non-negative number")
    if x < 0:
        raise _fail("a non-negative number", value)
    return x


def _probability(value: Any) -> float:
    x = _as_float(value, "a probability in [0, 1)")
    if not 0.0 <= x < 1.0:
        raise _fail("a probability in [0, 1)", value)
    return x


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _fail("true or false", value)


def _list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError, RecursionError):  # e.g. "2001-13-01", "[[[[..."
            raise _fail(what, value) from None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise _fail(what, value)
    return value


def _shape(value: Any) -> tuple[int, ...]:
    what = "a list of positive integers (-1 for one inferred axis)"
    items = _list(value, what)
    out = []
    for item in items:
        n = _as_int(item, what) if not isinstance(item, bool) else None
        if n is None or (n <= 0 and n != -1):
            raise _fail(what, value)
        out.append(n)
    if out.count(-1) > 1:
        raise _fail(what, value)
    return tuple(out)


def _betas(value: Any) -> tuple[float, float]:
    what = "two numbers in [0, 1), like [0.9, 0.999]"
    items = _list(value, what)
    if len(items) != 2:
        raise _fail(what, value)
    b = tuple(_as_float(v, what) for v in items)
    if not all(0.0 <= x < 1.0 for x in b):
        raise _fail(what, value)
    return (b[0], b[1])


def parse_precision(value: Any) -> str:
    """float32 | fp16 | bf16 from any accepted spelling (fp32, half, bfloat16, ...)."""
    if isinstance(value, str) and value.strip().lower() in PRECISION_ALIASES:
        return PRECISION_ALIASES[value.strip().lower()]
    raise _fail("one of float32, fp16, bf16", value)


def _name(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _fail("a non-empty name", value)


def choice(*options: str) -> BeforeValidator:
    """A validator accepting one of `options`, case-insensitively."""

    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise _fail("one of " + ", ".join(options), value)

    return BeforeValidator(parse)


PositiveInt = Annotated[int, BeforeValidator(_positive_int)]
NonNegativeInt = Annotated[int, BeforeValidator(_non_negative_int)]
Int = Annotated[int, BeforeValidator(_int)]
Float = Annotated[float, BeforeValidator(_float)]
PositiveFloat = Annotated[float, BeforeValidator(_positive_float)]
NonNegativeFloat = Annotated[float, BeforeValidator(_non_negative_float)]
Probability = Annotated[float, BeforeValidator(_probability)]
Bool = Annotated[bool, BeforeValidator(_bool)]
ShapeValue = Annotated[tuple[int, ...], BeforeValidator(_shape)]
Betas = Annotated[tuple[float, float], BeforeValidator(_betas)]
PrecisionValue = Annotated[str, BeforeValidator(parse_precision)]
Name = Annotated[str, BeforeValidator(_name)]
