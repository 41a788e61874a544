"""The catalog: every node type the runtime will ever run, in one explicit table.

A PNode runs only these types (SPEC §1, single-service scope). Adding a type means
adding one file and one row here; nothing registers itself on import.
"""

from __future__ import annotations

import difflib

from dcnr.nodes.add import Add
from dcnr.nodes.attention import Attention
from dcnr.nodes.attention_head import AttentionHead
from dcnr.nodes.base import NodeType
from dcnr.nodes.broadcast import Broadcast
from dcnr.nodes.cost import Cost
from dcnr.nodes.detokenizer import Detokenizer
from dcnr.nodes.dropout import Dropout
from dcnr.nodes.embedder import Embedder
from dcnr.nodes.gelu import GELU
from dcnr.nodes.layernorm import LayerNorm
from dcnr.nodes.linear import Linear
from dcnr.nodes.mask import Mask
from dcnr.nodes.relu import ReLU
from dcnr.nodes.reshape import Reshape
from dcnr.nodes.silu import SiLU
from dcnr.nodes.stack import Stack
from dcnr.nodes.swiglu import SwiGLU
from dcnr.nodes.tied_lm_head_ce import TiedLMHeadCE
from dcnr.nodes.tokenizer import TokenizerNode

# (canonical name, aliases, class)
_TABLE: list[tuple[str, tuple[str, ...], type[NodeType]]] = [
    ("linear", ("dense",), Linear),
    ("embedder", (), Embedder),
    ("layernorm", (), LayerNorm),
    ("attention_head", ("singleheadattention",), AttentionHead),
    ("attention", ("multiheadattention",), Attention),
    ("tied_lm_head_ce", ("fusedlmheadce",), TiedLMHeadCE),
    ("relu", (), ReLU),
    ("gelu", (), GELU),
    ("silu", (), SiLU),
    ("swiglu", (), SwiGLU),
    ("dropout", (), Dropout),
    ("broadcast", (), Broadcast),
    ("stack", (), Stack),
    ("add", (), Add),
    ("reshape", (), Reshape),
    ("mask", (), Mask),
    ("tokenizer", (), TokenizerNode),
    ("detokenizer", (), Detokenizer),
    ("cost", (), Cost),
]


def _build() -> tuple[dict[str, type[NodeType]], dict[str, str]]:
    types: dict[str, type[NodeType]] = {}
    names: dict[str, str] = {}  # any accepted spelling -> canonical name
    for name, aliases, cls in _TABLE:
        for spelling in (name, *aliases):
            if spelling in names:
                raise RuntimeError(f"node type name {spelling!r} is registered twice")
            names[spelling] = name
        types[name] = cls
    return types, names


NODE_TYPES, TYPE_NAMES = _build()


def canonical_type(name: str) -> str | None:
    """The canonical type for a name or alias (case-insensitive), or None."""
    return TYPE_NAMES.get(name.strip().lower())


def suggest_type(name: str) -> str | None:
    """The closest known type name, for 'did you mean' messages."""
    close = difflib.get_close_matches(name.strip().lower(), list(TYPE_NAMES), n=1, cutoff=0.5)
    return close[0] if close else None
