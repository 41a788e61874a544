"""Shapes as validation knows them: each axis a size or a symbol; the batch axis implicit.

Shared, like `dcnr.errors`, by the catalog's shape rules (`NodeType.infer_shapes`) and the
spec's inference over the graph; nothing at run time uses it. Imports nothing of ours but
`dcnr.errors`.

An axis the configs fix is an int. One they do not fix (how many tokens a network input
holds, say) is a symbol such as `"S"`, printed as is. A shape whose leading axes are not
known at all is *open*, printed `[..., 16]`; `ANY` knows nothing. Text (the input of a
tokenizer, the output of a detokenizer) has no shape and is `None`.

Shape rules check only what is known: a symbol or an open prefix never causes an error,
and two known sizes that differ always do. Symbols are names for the reader, never
compared: `[S, 4]` and `[T, 4]` may well be the same shape at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcnr.errors import ShapeError

Dim = int | str  # a size the configs fix, or a symbol naming one they do not


@dataclass(frozen=True)
class SymShape:
    """The trailing axes `dims`, after any number of unknown axes when `open`."""

    dims: tuple[Dim, ...]
    open: bool = False

    def __str__(self) -> str:
        return "[" + ", ".join([*(["..."] if self.open else []), *map(str, self.dims)]) + "]"

    @property
    def concrete(self) -> tuple[int, ...] | None:
        """The shape as ints when every axis is known, else None."""
        if self.open or not all(isinstance(d, int) for d in self.dims):
            return None
        return tuple(int(d) for d in self.dims)

    def with_last(self, dim: Dim) -> SymShape:
        """The same axes with the last one replaced by `dim` (an open shape may have none yet)."""
        return SymShape((*self.dims[:-1], dim), self.open)

    def without_last(self) -> SymShape:
        return SymShape(self.dims[:-1], self.open)


ANY = SymShape((), open=True)


def exact(shape: tuple[int, ...]) -> SymShape:
    """A fully known shape (a declared one)."""
    return SymShape(tuple(shape))


def merge_dim(a: Dim, b: Dim) -> Dim | None:
    """What both axes may be: the known size of either, or None when two known sizes differ."""
    if isinstance(a, int) and isinstance(b, int):
        return a if a == b else None
    return a if isinstance(a, int) else b


def unify(a: SymShape, b: SymShape) -> SymShape | None:
    """The most specific shape both may be, or None when what is known of them conflicts."""
    if len(a.dims) < len(b.dims):
        a, b = b, a
    extra = len(a.dims) - len(b.dims)  # axes of `a` that `b` must cover with its open prefix
    if extra and not b.open:
        return None
    tail = [merge_dim(x, y) for x, y in zip(a.dims[extra:], b.dims, strict=True)]
    if any(d is None for d in tail):
        return None
    return SymShape((*a.dims[:extra], *(d for d in tail if d is not None)), a.open and b.open)


def tensor(inputs: list[SymShape | None], slot: int) -> SymShape:
    """The shape arriving at `slot`, which must be a tensor, not text."""
    shape = inputs[slot] if slot < len(inputs) else ANY
    if shape is None:
        raise ShapeError(f"input slot {slot}: expected a tensor, got text")
    return shape


def require(inputs: list[SymShape | None], slot: int, rank: int | None = None, last: int | None = None,
            what: str = "") -> SymShape:
    """The tensor shape at `slot`, checked against a rank and a last axis where those are known.

    What the rule knows refines the shape: an open shape gains the required rank (its
    unknown axes named `S`) and a symbolic last axis becomes `last`.
    """
    shape = tensor(inputs, slot)
    if rank is not None:
        if len(shape.dims) > rank or (len(shape.dims) < rank and not shape.open):
            raise ShapeError(f"input slot {slot}: expected {rank} axes{what}, got shape {shape}")
        shape = SymShape(("S",) * (rank - len(shape.dims)) + shape.dims)
    if last is not None:
        have = shape.dims[-1] if shape.dims else None
        if (isinstance(have, int) and have != last) or (have is None and not shape.open):
            raise ShapeError(f"input slot {slot}: expected last axis {last}{what}, got shape {shape}")
        shape = shape.with_last(last) if shape.dims else SymShape((last,), open=True)
    return shape


def known_size(shape: SymShape) -> tuple[int, bool]:
    """(product of the known axes, whether that is the whole element count)."""
    ints = [d for d in shape.dims if isinstance(d, int)]
    return math.prod(ints), not shape.open and len(ints) == len(shape.dims)
