"""`LocalExecutor`: a whole network in one process, run by message passing.

Each node of the executed graph (`dcnr.spec.passes.plan`: the written one after the
SPEC §6 fusions, unless the YAML says `fuse: false`) becomes a `VNode`; values travel
along edges as messages keyed by request id, exactly as they will between PNodes.
Micro-batches run one after another (so only one micro-batch's caches are alive at a
time) and every gradient sum happens in a fixed order, so results do not depend on
scheduling.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dcnr.artifact import (
    VNodeState,
    artifact_metadata,
    by_node,
    executed_state,
    read_artifact,
    read_tensors,
    write_artifact,
    written_state,
)
from dcnr.data.vocabularies import Vocabularies
from dcnr.nodes.base import stable_seed
from dcnr.runtime.graph import backward_set, check_inputs, select_outputs, split_batch
from dcnr.runtime.precision import LossScaler
from dcnr.runtime.router import Router
from dcnr.runtime.sampling import sample_tokens
from dcnr.runtime.vnode import Parameter, StepClock, VNode
from dcnr.spec.loader import parse_network
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import ExecutionPlan, plan
from dcnr.storage.files import write_atomic
from dcnr.transport.messages import Hop, Run


def initial_value(spec: NetworkSpec, seed: int, node_id: str, param: str) -> torch.Tensor:
    """The initial fp32 value of a written node's parameter: a function of (seed, node, param)."""
    impl = spec.nodes[node_id].impl
    gen = torch.Generator().manual_seed(stable_seed(seed, node_id, param))
    return impl.init_param(param, impl.param_shapes()[param], gen).float()


def build_vnodes(plan: ExecutionPlan | NetworkSpec, seed: int, device: torch.device,
                 only: Collection[str] | None = None, vocabularies: Vocabularies | None = None,
                 clock: StepClock | None = None, initial: bool = True) -> dict[str, VNode]:
    """Create the VNodes of the executed graph (all, or those in `only`) with initial parameters
    derived from (seed, written node, param): the same values wherever a VNode is built, fused or not
    (with `initial=False`, zeros: the caller loads a state into them at once).
    Given a `NetworkSpec` instead of a plan, its graph is built exactly as written. Text nodes load
    their vocabularies through `vocabularies` (default: files only, no stored vocabularies); every
    VNode reads the network's step from `clock` (default: a new one at step 0)."""
    clock = clock or StepClock()
    vocabularies = vocabularies if vocabularies is not None else Vocabularies()
    if isinstance(plan, NetworkSpec):
        plan = ExecutionPlan(plan, plan, {}, {})
    spec = plan.spec
    hosted = set(spec.nodes) if only is None else set(only)
    unknown = sorted(hosted - set(spec.nodes))
    if unknown:
        raise ValueError(f"network {spec.name!r} has no VNode {unknown[0]!r}")
    live = backward_set(spec)
    publishers = spec.publishers()
    # contributors of each owned parameter: the owner first, then tied nodes in file order
    contributors: dict[tuple[str, str], list[str]] = {}
    for nid, node in spec.nodes.items():
        tied = node.impl.tied()
        for pname in node.impl.param_shapes():
            owner = (publishers[tied[pname]], "weight") if pname in tied else (nid, pname)
            if nid in live:
                contributors.setdefault(owner, []).append(nid)
            else:
                contributors.setdefault(owner, [])
    masters: dict[tuple[str, str], Parameter] = {}
    for nid, node in spec.nodes.items():
        tied = node.impl.tied()
        for alias in tied.values():
            if nid in hosted and publishers[alias] not in hosted:
                raise ValueError(f"VNode {nid!r} is tied to {publishers[alias]!r}: they must be hosted together")
        for pname, shape in node.impl.param_shapes().items():
            if pname in tied or nid not in hosted:
                continue
            parts = plan.param_parts(nid, pname)
            if not initial:
                value = torch.zeros(shape, device=device)
            else:
                value = (initial_value(spec, seed, nid, pname) if parts is None else  # rows of a fused parameter
                         torch.cat([initial_value(plan.written, seed, p.node, p.param) for p in parts])).to(device)
            assert tuple(value.shape) == tuple(shape), f"{nid}.{pname}: initial value of the wrong shape"
            masters[(nid, pname)] = Parameter(value, contributors=max(1, len(contributors[(nid, pname)])))
    edges = list(spec.edges)
    vnodes = {}
    for nid, node in spec.nodes.items():
        if nid not in hosted:
            continue
        tied = node.impl.tied()
        params, ranks = {}, {}
        for pname in node.impl.param_shapes():
            owner = (publishers[tied[pname]], "weight") if pname in tied else (nid, pname)
            params[pname] = masters[owner]
            ranks[pname] = contributors[owner].index(nid) if nid in contributors[owner] else 0
        grad_edges = [(i, e.src_slot) for i, e in enumerate(edges) if e.src == nid and e.dst in live]
        is_root = nid in {b.node_id for b in spec.costs}
        vnodes[nid] = VNode(node, seed, params, ranks, grad_edges if nid in live else [], is_root, device,
                            vocabularies, clock)
    return vnodes


class LocalExecutor:
    """Runs a validated network in-process. See the README for the API contract.

    `written` is the network as given; `spec` the executed graph (`plan`), which `vnodes`
    and routing follow. Parameters, gradients and saved files use the written graph's names.
    """

    def __init__(self, spec: NetworkSpec, seed: int | None = None, device: str | torch.device = "cpu") -> None:
        self.plan = plan(spec)
        self.written = spec
        spec = self.spec = self.plan.spec
        self.seed = spec.seed if seed is None else seed
        self.device = torch.device(device)
        self.clock = StepClock()  # the network's step: owned here, read by every VNode
        self.vnodes = build_vnodes(self.plan, self.seed, self.device, clock=self.clock)
        self._infer_counter = 0
        self._next_micro_batch = 0  # micro-batch index where the next train_step of this step starts
        fp16 = any("fp16" in (n.param_precision, n.activation_precision) for n in spec.nodes.values())
        self.scaler = LossScaler(enabled=fp16)
        self.router = Router(spec)

    @property
    def step(self) -> int:
        """Training steps applied (the network's one step counter in this process)."""
        return self.clock.step

    @step.setter
    def step(self, value: int) -> None:
        self.clock.step = value

    # -- helpers ------------------------------------------------------------------------
    def _run(self, run: Run, micro_batch: int, inputs: Mapping[str, Any]) -> dict[tuple[str, int], Any]:
        """Deliver one micro-batch's inputs and route messages until quiet; returns the reported
        values {(VNode, slot): value} (the costs, or the outputs the run asks for)."""
        queue: deque[Hop] = deque(self.router.inputs(run, micro_batch, inputs))
        reported: dict[tuple[str, int], Any] = {}
        while queue:
            hop = queue.popleft()
            for msg in self.router.deliver(self.vnodes[hop.vnode], run, hop):
                if isinstance(msg, Hop):
                    queue.append(msg)
                elif msg.kind == "output":
                    reported[(msg.vnode, msg.slot)] = msg.value
        return reported

    # -- public API -------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        """Evaluate the network (no dropout, nothing cached); returns {output name: value}."""
        by_name = {b.name: b for b in self.spec.outputs}
        outputs = select_outputs(self.spec, set(inputs), outputs)
        self._infer_counter += 1
        run = Run(self.spec.name, f"infer/{self._infer_counter}", self._infer_counter, "infer", outputs=tuple(outputs))
        batch = check_inputs(self.spec, inputs, set(self.router.needed(run)))
        with torch.no_grad():
            produced = self._run(run, 0, batch)
        return {n: produced[(by_name[n].node_id, by_name[n].slot_id)] for n in outputs}

    def train_step(self, inputs: Mapping[str, Any], micro_batches: int = 1, update: bool = True) -> dict[str, float]:
        """One training step: forward+backward per micro-batch, then (optionally) update.

        Returns {cost name: loss}, each the mean over micro-batches. Called again before
        `update`, it adds further micro-batches to the step's gradients. A step that fails
        (bad input) discards the step's gradients, leaving the executor usable.
        """
        if not self.spec.costs:
            raise ValueError(f"network {self.spec.name!r} has no costs to train")
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be at least 1, got {micro_batches}")
        run = Run(self.spec.name, f"train/{self.step}", self.step, "train", micro_batches,
                  grad_scale=self.scaler.scale / micro_batches)
        chunks = split_batch(check_inputs(self.spec, inputs, set(self.router.needed(run))), micro_batches)
        totals = {b.name: 0.0 for b in self.spec.costs}
        try:
            for mb, chunk in enumerate(chunks):
                with torch.no_grad():
                    produced = self._run(run, self._next_micro_batch + mb, chunk)
                for b in self.spec.costs:
                    totals[b.name] += float(produced[(b.node_id, b.slot_id)]) / micro_batches
        except BaseException:
            self.zero_grad()  # nothing half-done may poison the next step's request ids
            raise
        self._next_micro_batch += micro_batches
        for vnode in self.vnodes.values():
            for p in vnode.params.values():
                assert p.settled(), f"{vnode.id}: gradients left pending after the step"
        if update:
            self.update()
        return totals

    def update(self) -> bool:
        """Apply every VNode's optimizer; returns False when the step was skipped (overflow)."""
        finite = all(v.grads_finite() for v in self.vnodes.values())
        scale = self.scaler.scale
        apply = self.scaler.update(finite)
        for vnode in self.vnodes.values():
            vnode.apply_update(scale, apply)
        self.clock.step += 1
        self._next_micro_batch = 0
        return apply

    def metrics(self) -> dict[str, float]:
        """Current values of the network's `metrics:` (e.g. learning rates)."""
        return {m.name: self.vnodes[m.node_id].learning_rate() for m in self.spec.metrics}

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter `<node_id>.<param>` of the written graph (fp32 master copies; tied ones once)."""
        return _flat(written_state(self.plan, {
            nid: {f"param/{p}": v.params[p].master.detach().clone() for p in v.owned}
            for nid, v in self.vnodes.items()}))

    def gradients(self) -> dict[str, torch.Tensor]:
        """Accumulated gradients (unscaled fp32) of the current step, zeros where none, keyed like `parameters`."""
        grads: dict[str, VNodeState] = {}
        for nid, v in self.vnodes.items():
            for p in v.owned:
                param = v.params[p]
                g = param.grad if param.grad is not None else torch.zeros_like(param.master)
                grads.setdefault(nid, {})[f"param/{p}"] = g / self.scaler.scale
        return _flat(written_state(self.plan, grads))

    def zero_grad(self) -> None:
        """Discard the current step's gradients and unfinished work; the step can be redone."""
        for v in self.vnodes.values():
            for p in v.owned:
                v.params[p].zero_grad()
            v.abandon_step()
        self._next_micro_batch = 0

    def _check_parameters(self, params: Mapping[str, torch.Tensor]) -> None:
        """Keys and shapes must be exactly those of `parameters()`."""
        shapes = self.written.parameter_shapes()
        unknown = sorted(set(params) - set(shapes))
        missing = sorted(set(shapes) - set(params))
        if unknown or missing:
            raise ValueError(f"parameters do not match network {self.spec.name!r}: "
                             f"missing {missing[:5]}, unknown {unknown[:5]}")
        for key, value in params.items():
            if tuple(value.shape) != tuple(shapes[key]):
                raise ValueError(f"parameter {key}: expected shape {list(shapes[key])}, got {list(value.shape)}")

    def load_parameters(self, params: Mapping[str, torch.Tensor]) -> None:
        """Replace parameters; keys and shapes must match `parameters()` exactly."""
        self._check_parameters(params)
        state = executed_state(self.plan, by_node(params, self.written))
        for nid, v in self.vnodes.items():
            for name in v.owned:
                target = v.params[name]
                target.master.copy_(state[nid][f"param/{name}"].to(target.master))
                target.version += 1

    def save(self, path: str | Path) -> None:
        """Write parameters, optimizer state and step as a network artifact (`dcnr.artifact`)."""
        state = written_state(self.plan, {nid: v.state() for nid, v in self.vnodes.items()})
        meta = {
            "network": self.spec.name,
            "step": str(self.step),
            "seed": str(self.seed),
            "scaler": json.dumps({"scale": self.scaler.scale, "good_steps": self.scaler.good_steps}),
            "yaml": self.written.source,
        }
        write_atomic(Path(path), write_artifact({k: {n: t.cpu() for n, t in v.items()} for k, v in state.items()},
                                                meta))

    def load(self, path: str | Path) -> None:
        """Restore what `save` (or `dcnr network export`) wrote; the network must be the same."""
        blob = Path(path).read_bytes()
        try:
            meta = artifact_metadata(blob)
            flat = read_tensors(blob)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        self._check_parameters({k: t for k, t in flat.items() if not k.startswith("optim/")})
        self._restore(by_node(flat, self.written), meta)

    def _restore(self, state: Mapping[str, VNodeState], meta: Mapping[str, str]) -> None:
        """Load per-node state of the written graph, and the step, seed and loss scale of `meta`."""
        step = int(meta.get("step", "0"))
        for nid, s in executed_state(self.plan, state).items():
            self.vnodes[nid].load_state(s, step)
        self.step = step
        self.seed = int(meta.get("seed", self.seed))  # dropout/mask streams continue as they were
        for v in self.vnodes.values():
            v.seed = self.seed
        scaler = json.loads(meta.get("scaler", "{}"))
        self.scaler.scale = float(scaler.get("scale", self.scaler.scale))
        self.scaler.good_steps = int(scaler.get("good_steps", 0))
        self.zero_grad()

    @classmethod
    def from_artifact(cls, path: str | Path, device: str | torch.device = "cpu") -> LocalExecutor:
        """The network of an exported artifact with its parameters, optimizer state and step."""
        blob = Path(path).read_bytes()
        try:
            meta = artifact_metadata(blob)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        spec = parse_network(meta["yaml"], source=f"{path} (network)")
        ex = cls(spec, seed=int(meta.get("seed", spec.seed)), device=device)
        ex._restore(read_artifact(blob, spec), meta)
        return ex

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int = 50,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 output: str | None = None) -> torch.Tensor:
        """Sample tokens autoregressively from a language-model network.

        The network needs an input bound to an `embedder` and an output of logits
        [seq, vocab]. Returns prompt + new tokens as a 1-D tensor.
        """
        prompt = torch.as_tensor(list(prompt_ids) if not isinstance(prompt_ids, torch.Tensor) else prompt_ids,
                                 dtype=torch.long).reshape(-1)
        new = list(sample_tokens(lambda x, outs: self.forward(x, outputs=outs), self.spec, prompt, max_new_tokens,
                                 temperature, top_k, self.seed if seed is None else seed, output))
        return torch.cat([prompt, torch.tensor(new, dtype=torch.long)])


def _flat(state: Mapping[str, VNodeState]) -> dict[str, torch.Tensor]:
    """Per-node parameters (`param/<name>`) as `<node>.<name>`."""
    return {f"{nid}.{key[len('param/'):]}": t for nid, s in state.items() for key, t in s.items()}
