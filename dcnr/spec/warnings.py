"""Warnings: config keys a file sets that change nothing for their node.

Not errors (the network runs as the file says), but the user meant something by them:
`lr` on a `relu`, which has no parameters and so no optimizer; `momentum` with adam;
`rope_theta` where no rope is applied. Only keys the file sets are considered, never
defaults.
"""

from __future__ import annotations

from dcnr.nodes.base import NodeType

# keys that only matter to a node's own optimizer
OPTIMIZER_KEYS = ("optimizer", "lr", "betas", "weight_decay", "momentum", "lr_schedule", "warmup_steps",
                  "decay_steps", "min_lr")


def ignored_keys(impl: NodeType, type_name: str) -> dict[str, str]:
    """Keys set in `impl`'s config to no effect: key -> why."""
    cfg = impl.cfg
    why: dict[str, str] = {}
    # a node whose parameters are all tied keeps its optimizer keys: its learning-rate metric reads them
    if not impl.param_shapes():
        why |= dict.fromkeys(OPTIMIZER_KEYS, "it has no parameters to optimize")
        why["param_precision"] = "it has no parameters"
    else:
        if cfg.optimizer == "sgd":
            why["betas"] = "betas apply to adam and adamw, not sgd"
        else:
            why["momentum"] = f"momentum applies to sgd, not {cfg.optimizer}"
        if cfg.lr_schedule != "cosine":
            why |= dict.fromkeys(("decay_steps", "min_lr"), f"they apply to the cosine schedule, not {cfg.lr_schedule}")
        if cfg.lr_schedule == "constant":
            why["warmup_steps"] = "the lr_schedule is constant"
    if cfg.param_precision is not None and cfg.activation_precision is not None:
        why["precision"] = "param_precision and activation_precision both override it"
    if cfg.colocate_group is None:
        why["colocate_policy"] = "there is no colocate_group"
    encoding = getattr(cfg, "position_encoding", "rope")
    if type_name == "embedder":
        why["rope_theta"] = "rope is applied by attention (set rope_theta there)"
    elif encoding != "rope":
        why["rope_theta"] = f"position_encoding is {encoding}"
    if getattr(cfg, "random_prob", None) == 0:
        why["seed"] = "random_prob is 0, so nothing random is drawn"
    return {key: reason for key, reason in why.items() if key in cfg.model_fields_set}
