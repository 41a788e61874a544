"""`dcnr evaluate` and `dcnr chat`: using a trained network on an orchestrator."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from dcnr.cli.common import DEFAULT, AsJson, Orchestrator, connect, err


def evaluate(network: Annotated[str, typer.Argument(help="Network name.")],
             dataset: Annotated[str, typer.Option(help="Dataset whose validation split to use.")],
             batches: Annotated[int, typer.Option(help="Held-out batches.")] = 4,
             batch_size: Annotated[int, typer.Option(help="Sequences per batch.")] = 8,
             seed: Annotated[int, typer.Option(help="Which held-out windows.")] = 0,
             as_json: AsJson = False, orchestrator: Orchestrator = DEFAULT) -> None:
    """Held-out loss of a network on a dataset's validation split."""
    with connect(orchestrator) as c:
        costs = c.validate(network, dataset, batches=batches, batch_size=batch_size, seed=seed)
    if as_json:
        print(json.dumps(costs))
        return
    for k, v in sorted(costs.items()):
        print(f"{k}: {v:.4f}")


def chat(network: Annotated[str, typer.Argument(help="Network name.")],
         vocab: Annotated[str, typer.Option(help="Vocabulary (default: the one its last session trained with).")]
         = "",
         prompt: Annotated[str | None, typer.Option(help="One prompt, then exit (default: interactive).")] = None,
         max_tokens: Annotated[int, typer.Option(help="Tokens to generate per reply.")] = 64,
         temperature: Annotated[float, typer.Option(help="0 for greedy.")] = 0.8,
         top_k: Annotated[int, typer.Option(help="Sample from the k likeliest tokens (0: all).")] = 40,
         seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
         orchestrator: Orchestrator = DEFAULT) -> None:
    """Generate text with a language-model network, streamed as it is produced."""
    with connect(orchestrator) as c:
        def reply(text: str) -> None:
            for chunk in c.chat(network, text, vocabulary=vocab, max_new_tokens=max_tokens,
                                temperature=temperature, top_k=top_k, seed=seed):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")

        if prompt is not None:
            reply(prompt)
            return
        err.print("type a prompt and press Enter; Ctrl-D to quit", style="dim")
        while True:
            try:
                text = input("> ")
            except EOFError:
                return
            if text.strip():
                reply(text)
