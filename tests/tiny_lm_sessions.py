"""What the fault and relay tests share: the tiny LM and its texts, the uninterrupted reference run, the
seeded fault points, following a session to its end (acting at chosen steps), and comparing the final
parameters with the reference, bit for bit."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

import dcnr
from dcnr.cluster import ORCHESTRATOR, LocalCluster
from dcnr.data.dataset import TokenDataset
from dcnr.errors import DcnrError

NETWORK = (Path(__file__).resolve().parents[1] / "examples" / "networks" / "tiny_lm.yml").read_text()
TEXTS = [f"def f{i}(x):\n    return x * {i % 7} + {i // 7}  # line {i}\n" for i in range(400)]


def fault_points() -> random.Random:
    """Where faults strike: drawn from a seed that a failing test's output shows (set DCNR_FAULT_SEED to that
    seed to replay the same fault points)."""
    seed = int(os.environ.get("DCNR_FAULT_SEED") or random.randrange(2**32))
    print(f"fault points drawn with random.Random({seed})")
    return random.Random(seed)


def reference_parameters(vocab: Tokenizer, steps: int, batch: int, micro: int, seed: int) -> dict[str, torch.Tensor]:
    """The uninterrupted run: `steps` steps of the tiny LM in one process."""
    ds = TokenDataset.from_texts(TEXTS, vocab, validation_fraction=0.1)
    ex = dcnr.LocalExecutor(dcnr.parse_network(NETWORK))
    for step in range(steps):
        x, y = ds.batch(seed, step, batch, 64)
        ex.train_step({"tokens": x, "targets": y}, micro_batches=micro)
    return ex.parameters()


def follow(fleet: LocalCluster, session: str, actions: dict[int, Callable[[], None]], timeout: float) -> None:
    """Listen until the session completes, running (and taking out of `actions`) `actions[step]` once when that
    step is reported. A listener cut off (the orchestrator was killed) listens again once it is back."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        assert time.monotonic() < deadline, (f"the session did not complete in time; last event: {last}\n"
                                             f"{fleet.log(ORCHESTRATOR, 8000)}")
        try:
            for ev in fleet.client.listen_session(session, timeout=timeout):
                last = ev
                assert ev.state != "failed", f"session failed: {ev.error}\n{fleet.log(ORCHESTRATOR)}"
                action = actions.pop(ev.step, None)
                if action is not None:
                    action()
                if ev.state == "completed":
                    return
            if {s.id: s for s in fleet.client.list_sessions()}[session].state == "completed":
                return
        except DcnrError:
            time.sleep(0.3)  # the orchestrator is away; it comes back (or the deadline fails the test)


def assert_final_parameters(fleet: LocalCluster, want: dict[str, torch.Tensor], what: str = "") -> None:
    """The network's exported parameters are bit-identical to `want`."""
    path = fleet.state_dir / "final.safetensors"
    fleet.client.export_network("lm", path)
    got = {k: v for k, v in load_file(path).items() if not k.startswith("optim/")}
    assert set(got) == set(want)
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"{what}: parameters differ from the uninterrupted run: {different[:5]}"
