"""What PNodes commit to: digests of values and states, hop keys, and hop signatures.

A **value digest** is the BLAKE3 hash of a value's canonical encoding: dtype, shape and
the raw little-endian bytes in C order for a tensor (as it travels, SPEC §7), the JSON of
a list of strings for text, a fixed marker for "no gradient". A **state digest** hashes a
VNode's state tensors the same way, in name order; a checkpoint blob (safetensors) holds
the committed state when the state digest of the tensors it holds equals the commitment.
BLAKE3 on one thread hashes about 2.5 GB/s on a 2020s x86 core, twice SHA-256 with the
SHA extensions, which keeps commitments to a few percent of a step (measured in
benchmarks/bench_validation.py).

A **hop key** names one hop of a run the same way at its sender and its receiver:
`<micro-batch>/<op>/<destination VNode>/<slot or edge>`, with op `fwd`, `bwd`, or `out`
for a value reported to the orchestrator. A sender signs `(network, run, key, digest)` with
its PNode key; the receiver keeps the signature as proof of what it was sent.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

NO_VALUE = blake3(b"dcnr-none").hexdigest()  # a backward edge that contributes no gradient


def value_digest(value: Any) -> str:
    """The digest of a hop's value: a tensor, a list of strings, or None."""
    if value is None:
        return NO_VALUE
    h = blake3()
    if isinstance(value, torch.Tensor):
        _hash_tensor(h, value)
        return h.hexdigest()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        h.update(b"text|" + json.dumps(list(value)).encode())
        return h.hexdigest()
    raise TypeError(f"cannot digest a {type(value).__name__}: expected a tensor, a list of strings or None")


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """The digest of a VNode's state (its tensors by name, as `VNode.state()` and checkpoint blobs hold them)."""
    h = blake3()
    for name in sorted(state):
        h.update(f"{len(name)}:{name}|".encode())
        _hash_tensor(h, state[name])
    return h.hexdigest()


def _hash_tensor(h: blake3, value: torch.Tensor) -> None:
    t = value.detach().to("cpu").contiguous()
    h.update(f"{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
    if t.numel():
        raw = t.reshape(-1).view(torch.uint8)
        if sys.byteorder != "little" and t.element_size() > 1:
            raw = raw.reshape(-1, t.element_size()).flip(1).reshape(-1).contiguous()
        h.update(raw.numpy().data)


def hop_key(micro_batch: int, op: str, vnode: str, index: int) -> str:
    return f"{micro_batch}/{op}/{vnode}/{index}"


def parse_hop_key(key: str) -> tuple[int, str, str, int]:
    """(micro-batch, op, VNode, index) of a hop key; ValueError when it is not one."""
    mb, op, rest = key.split("/", 2)
    vnode, _, index = rest.rpartition("/")
    if op not in ("fwd", "bwd", "out") or not vnode:
        raise ValueError(f"not a hop key: {key!r}")
    return int(mb), op, vnode, int(index)


def _signed(network: str, run: str, key: str, digest: str) -> bytes:
    return f"dcnr-hop/1\n{network}\n{run}\n{key}\n{digest}".encode()


def sign_hop(private_key: ec.EllipticCurvePrivateKey, network: str, run: str, key: str, digest: str) -> bytes:
    """The sender's signature on one hop (ECDSA with SHA-256, DER)."""
    return private_key.sign(_signed(network, run, key, digest), ec.ECDSA(hashes.SHA256()))


def load_public_key(der: bytes) -> ec.EllipticCurvePublicKey:
    """A PNode's public key (SubjectPublicKeyInfo DER); ValueError when it is not an EC key."""
    key = serialization.load_der_public_key(der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("a PNode key must be an elliptic-curve key")
    return key


def hop_signed_by(public_key: ec.EllipticCurvePublicKey, network: str, run: str, key: str, digest: str,
                  signature: bytes) -> bool:
    """Whether `signature` is the holder of `public_key` signing this hop."""
    try:
        public_key.verify(signature, _signed(network, run, key, digest), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
