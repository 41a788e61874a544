"""Builds the reference decoder-only transformer of SPEC §13 as a network document.

Every block: pre-norm; broadcast -> layernorm -> broadcast to H attention_heads ->
stack -> linear -> dropout -> add (residual); broadcast -> layernorm -> linear ->
gelu -> linear -> dropout -> add. Head: layernorm -> linear (dim -> 8·dim) -> swiglu
-> linear -> tied lm_head -> cost (ce_logits, fp32).
"""

from __future__ import annotations

from typing import Any


def transformer_lm(
    name: str,
    *,
    blocks: int,
    heads: int,
    head_dim: int,
    dim: int,
    seq_len: int,
    vocab_size: int,
    ffn_dim: int | None = None,
    head_hidden: int | None = None,
    dropout: float = 0.1,
    precision: str = "float32",
    lr: float = 3e-4,
    seed: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A network document (a dict ready for YAML) for the reference topology."""
    ffn = ffn_dim or 4 * dim
    hidden = head_hidden or 8 * dim
    common = {"optimizer": "adam", "lr": lr, **(extra_config or {})}
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []

    def node(nid: str, type_: str, group: str | None = None, **config: Any) -> str:
        cfg = dict(config)
        if type_ in ("linear", "embedder", "layernorm", "attention_head"):
            cfg.update(common)
        if group:
            cfg.update(colocate_group=group, colocate_policy="required")
        nodes.append({"id": nid, "type": type_, "config": cfg})
        return nid

    def edge(src: str, dst: str, src_slot: int = 0, dst_slot: int = 0) -> None:
        edges.append({"from": src, "to": dst, "from_slot": src_slot, "to_slot": dst_slot})

    prev = node("embedder", "embedder", "token_embedding", vocab_size=vocab_size, dim=dim, seq_len=seq_len,
                position_encoding="rope", shared_weight_alias="token_embedding")
    for b in range(blocks):
        g = f"transformer_block_{b}"
        p = f"b{b}_"
        node(p + "res1", "broadcast", g, num_outputs=2)
        node(p + "ln1", "layernorm", g, dim=dim)
        node(p + "heads", "broadcast", g, num_outputs=heads)
        for h in range(heads):
            node(f"{p}head{h}", "attention_head", g, head_dim=head_dim, input_dim=dim, seq_len=seq_len,
                 causal=True, position_encoding="rope", rope_theta=10000.0)
        node(p + "stack", "stack", g, axis=-1)
        node(p + "proj", "linear", g, in_dim=heads * head_dim, out_dim=dim)
        node(p + "drop1", "dropout", g, rate=dropout)
        node(p + "add1", "add", g)
        node(p + "res2", "broadcast", g, num_outputs=2)
        node(p + "ln2", "layernorm", g, dim=dim)
        node(p + "fc1", "linear", g, in_dim=dim, out_dim=ffn)
        node(p + "gelu", "gelu", g)
        node(p + "fc2", "linear", g, in_dim=ffn, out_dim=dim)
        node(p + "drop2", "dropout", g, rate=dropout)
        node(p + "add2", "add", g)
        edge(prev, p + "res1")
        edge(p + "res1", p + "ln1", 0)
        edge(p + "res1", p + "add1", 1, 1)
        edge(p + "ln1", p + "heads")
        for h in range(heads):
            edge(p + "heads", f"{p}head{h}", h)
            edge(f"{p}head{h}", p + "stack", 0, h)
        for a, c in (("stack", "proj"), ("proj", "drop1"), ("drop1", "add1"), ("add1", "res2"),
                     ("res2", "ln2"), ("ln2", "fc1"), ("fc1", "gelu"), ("gelu", "fc2"),
                     ("fc2", "drop2"), ("drop2", "add2")):
            edge(p + a, p + c)
        edge(p + "res2", p + "add2", 1, 1)
        prev = p + "add2"
    node("ln_f", "layernorm", dim=dim)
    node("head_up", "linear", in_dim=dim, out_dim=hidden)
    node("head_swiglu", "swiglu")
    node("head_down", "linear", in_dim=hidden // 2, out_dim=dim)
    node("lm_head", "linear", "token_embedding", in_dim=dim, out_dim=vocab_size, bias=False,
         tie_weight_alias="token_embedding")
    nodes.append({"id": "loss", "type": "cost",
                  "config": {"cost_function": "ce_logits", "vocab_size": vocab_size, "cost_precision": "float32"}})
    for a, c in ((prev, "ln_f"), ("ln_f", "head_up"), ("head_up", "head_swiglu"), ("head_swiglu", "head_down"),
                 ("head_down", "lm_head"), ("lm_head", "loss")):
        edge(a, c)
    return {
        "name": name,
        "seed": seed,
        "precision": precision,
        "nodes": nodes,
        "edges": edges,
        "inputs": [{"name": "tokens", "node_id": "embedder", "slot_id": 0},
                   {"name": "targets", "node_id": "loss", "slot_id": 1}],
        "outputs": [{"name": "logits", "node_id": "lm_head", "slot_id": 0}],
        "costs": [{"name": "ce_loss", "node_id": "loss", "slot_id": 0}],
        "metrics": [{"name": "lm_head_lr", "type": "learning_rate", "node_id": "lm_head", "slot_id": 0}],
    }


def tiny_lm() -> dict[str, Any]:
    """The tiny LM (< 1 M parameters) used by tests and `dcnr demo`."""
    return transformer_lm("tiny-lm", blocks=2, heads=4, head_dim=32, dim=128, seq_len=64, vocab_size=2048,
                          precision="float32", lr=3e-3, dropout=0.0,
                          extra_config={"lr_schedule": "cosine", "warmup_steps": 20, "decay_steps": 400,
                                        "min_lr": 3e-4})
