"""Autoregressive sampling from a language-model network, whoever runs its forward.

The same loop serves the `LocalExecutor` and the orchestrator's `ChatNetwork`: only
the `forward` callable differs, so both draw the same tokens from the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from dcnr.nodes.embedder import Embedder
from dcnr.spec.model import NetworkSpec

Forward = Callable[[Mapping[str, torch.Tensor], Sequence[str]], Mapping[str, torch.Tensor]]


def lm_interface(spec: NetworkSpec, output: str | None = None) -> tuple[str, str, int]:
    """(tokens input name, logits output name, context window) of a language-model network."""
    tokens_in = next((b for b in spec.inputs if isinstance(spec.nodes[b.node_id].impl, Embedder)), None)
    if tokens_in is None:
        raise ValueError(f"network {spec.name!r} has no input bound to an embedder")
    out = output or (spec.outputs[0].name if spec.outputs else None)
    if out is None:
        raise ValueError(f"network {spec.name!r} has no outputs to sample from")
    if out not in {b.name for b in spec.outputs}:
        raise ValueError(f"network {spec.name!r} has no output {out!r}")
    window = int(spec.nodes[tokens_in.node_id].impl.cfg.seq_len)  # type: ignore[attr-defined]
    return tokens_in.name, out, window


def sample_tokens(forward: Forward, spec: NetworkSpec, prompt_ids: Sequence[int] | torch.Tensor,
                  max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                  output: str | None = None) -> Iterator[int]:
    """Yield new token ids one by one (logits of the last position, the last `window` tokens as context);
    a temperature of 0 or below is greedy."""
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number, got {temperature}")
    tokens_in, out, window = lm_interface(spec, output)
    ids = torch.as_tensor(list(prompt_ids) if not isinstance(prompt_ids, torch.Tensor) else prompt_ids,
                          dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise ValueError("generation needs at least one prompt token")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(max_new_tokens):
        context = ids[-window:][None]  # (1, S)
        logits = forward({tokens_in: context}, [out])[out][0, -1].float().cpu()  # (V,)
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            # at most 0, in float64 (a float32 temperature may round to 0): a tiny temperature makes -inf, never inf
            logits = (logits.double() - logits.max()) / temperature
            if top_k is not None and 0 < top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = torch.softmax(logits, -1)
            if not bool(torch.isfinite(probs).all()):
                raise ValueError(f"output {out!r} holds no finite logits to sample from (nan or inf)")
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        ids = torch.cat([ids, torch.tensor([nxt])])
        yield nxt
