"""Keys a node sets to no effect are warnings: one line each naming file, node and key; the network
still validates and `dcnr network validate` still exits 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dcnr import load_network, parse_network
from dcnr.cli.main import app
from dcnr.spec.loader import parse_stored_network

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "networks"


def warnings_for(ntype: str, config: dict[str, Any], **extra: Any) -> list[str]:
    """The warnings of a one-node network (fed by a network input) of `ntype` with `config`."""
    doc = {"nodes": [{"id": "n", "type": ntype, "config": config, **extra}],
           "inputs": [{"name": "x", "node_id": "n"}]}
    return list(parse_network(yaml.safe_dump(doc), source="net.yml").warnings)


LINEAR = {"in_dim": 4, "out_dim": 2}
HEAD = {"head_dim": 4, "input_dim": 8, "seq_len": 4}


def test_lr_on_relu_is_one_line_naming_file_node_and_key() -> None:
    """The issue's example: `lr: 1e-3` on a relu, which has no parameters and so no optimizer."""
    assert warnings_for("relu", {"lr": 1e-3}) == [
        "net.yml: nodes[0] 'n': config.lr: ignored by this relu: it has no parameters to optimize"
    ]


@pytest.mark.parametrize(("ntype", "config", "key", "why"), [
    ("gelu", {"optimizer": "sgd"}, "optimizer", "it has no parameters to optimize"),
    ("add", {"param_precision": "fp16"}, "param_precision", "it has no parameters"),
    ("linear", {**LINEAR, "momentum": 0.9}, "momentum", "momentum applies to sgd, not adam"),
    ("linear", {**LINEAR, "optimizer": "adamw", "momentum": 0.9}, "momentum", "momentum applies to sgd, not adamw"),
    ("linear", {**LINEAR, "optimizer": "sgd", "betas": [0.8, 0.9]}, "betas", "betas apply to adam and adamw, not sgd"),
    ("linear", {**LINEAR, "warmup_steps": 10}, "warmup_steps", "the lr_schedule is constant"),
    ("layernorm", {"dim": 4, "lr_schedule": "linear_warmup", "min_lr": 1e-5}, "min_lr",
     "they apply to the cosine schedule, not linear_warmup"),
    ("linear", {**LINEAR, "decay_steps": 100}, "decay_steps", "they apply to the cosine schedule, not constant"),
    ("linear", {**LINEAR, "precision": "fp16", "param_precision": "bf16", "activation_precision": "fp16"},
     "precision", "param_precision and activation_precision both override it"),
    ("relu", {"colocate_policy": "required"}, "colocate_policy", "there is no colocate_group"),
    ("embedder", {"vocab_size": 8, "dim": 4, "seq_len": 4, "rope_theta": 500}, "rope_theta",
     "rope is applied by attention (set rope_theta there)"),
    ("attention_head", {**HEAD, "position_encoding": "none", "rope_theta": 500}, "rope_theta",
     "position_encoding is none"),
    ("attention", {"num_heads": 2, "head_dim": 2, "dim": 8, "seq_len": 4, "position_encoding": "none",
                   "rope_theta": 500}, "rope_theta", "position_encoding is none"),
    ("mask", {"seed": 3}, "seed", "random_prob is 0, so nothing random is drawn"),
])
def test_each_ignored_key(ntype: str, config: dict[str, Any], key: str, why: str) -> None:
    """Each kind of key that changes nothing is reported once, saying why."""
    assert warnings_for(ntype, config) == [f"net.yml: nodes[0] 'n': config.{key}: ignored by this {ntype}: {why}"]


@pytest.mark.parametrize(("ntype", "config"), [
    ("relu", {}),
    ("linear", {**LINEAR, "optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "weight_decay": 0.01}),
    ("linear", {**LINEAR, "betas": [0.8, 0.9], "lr_schedule": "cosine", "warmup_steps": 5, "decay_steps": 50,
                "min_lr": 1e-5}),
    ("layernorm", {"dim": 4, "lr_schedule": "linear_warmup", "warmup_steps": 5}),
    ("linear", {**LINEAR, "precision": "fp16", "param_precision": "bf16"}),
    ("relu", {"colocate_group": "g", "colocate_policy": "required", "precision": "fp16"}),
    ("attention_head", {**HEAD, "rope_theta": 500}),
    ("mask", {"seed": 3, "random_prob": 0.1}),
])
def test_keys_that_take_effect_are_not_warned(ntype: str, config: dict[str, Any]) -> None:
    """Defaults are never warned about, and every key here changes what the node does."""
    assert warnings_for(ntype, config) == []


def test_tied_node_keeps_its_optimizer_keys_quietly() -> None:
    """A linear whose weight is tied keeps lr (its learning-rate metric reads it): no warning."""
    doc = {"nodes": [{"id": "emb", "type": "embedder",
                      "config": {"vocab_size": 8, "dim": 4, "seq_len": 2, "shared_weight_alias": "w"}},
                     {"id": "head", "type": "linear",
                      "config": {"in_dim": 4, "out_dim": 8, "bias": False, "tie_weight_alias": "w", "lr": 0.1}}],
           "edges": [{"from": "emb", "to": "head"}], "inputs": [{"name": "x", "node_id": "emb"}]}
    assert parse_network(doc).warnings == ()


def test_reference_networks_have_no_warnings() -> None:
    """The shipped examples set no key to no effect."""
    for name in ("topology1", "topology2", "tiny_lm"):
        assert load_network(EXAMPLES / f"{name}.yml").warnings == (), name


def test_warnings_survive_a_stored_network() -> None:
    """A network stored under another name keeps its warnings, naming where it came from."""
    text = yaml.safe_dump({"name": "a", "nodes": [{"id": "n", "type": "relu", "config": {"lr": 0.1}}],
                           "inputs": [{"name": "x", "node_id": "n"}]})
    (line,) = parse_stored_network(text, "b").warnings
    assert line.startswith("network 'b': nodes[0] 'n': config.lr: ignored by this relu")


def test_cli_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    """`dcnr network validate` prints each warning on stderr, the ok line on stdout, and exits 0."""
    path = tmp_path / "net.yml"
    path.write_text(yaml.safe_dump({"nodes": [{"id": "act", "type": "relu", "config": {"lr": 1e-3}},
                                              {"id": "m", "type": "mask", "config": {"seed": 1}}],
                                    "edges": [{"from": "act", "to": "m"}],
                                    "inputs": [{"name": "x", "node_id": "act"}]}))
    result = CliRunner().invoke(app, ["network", "validate", str(path)], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {path}: nodes[0] 'act': config.lr: ignored by this relu: it has no parameters to optimize",
        f"warning: {path}: nodes[1] 'm': config.seed: ignored by this mask: random_prob is 0, so nothing random "
        "is drawn",
    ]
    assert result.stdout.startswith(f"{path}: ok") and result.stdout.count("\n") == 1
