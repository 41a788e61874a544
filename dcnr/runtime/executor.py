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
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dcnr.nodes.base import stable_seed
from dcnr.runtime.artifact import (
    VNodeState,
    artifact_metadata,
    by_node,
    executed_state,
    read_artifact,
    read_tensors,
    write_artifact,
    written_state,
)
from dcnr.runtime.precision import LossScaler
from dcnr.runtime.sampling import sample_tokens
from dcnr.runtime.vnode import Parameter, RequestId, VNode
from dcnr.spec.loader import parse_network
from dcnr.spec.model import Edge, NetworkSpec
from dcnr.spec.passes import ExecutionPlan, plan
from dcnr.storage.files import write_atomic


def backward_set(spec: NetworkSpec) -> set[str]:
    """Nodes that receive a gradient: costs, and differentiable nodes upstream of one."""
    roots = {b.node_id for b in spec.costs}
    live = set(roots)
    for nid in reversed(spec.topo_order):
        node = spec.nodes[nid]
        if nid not in live and node.impl.differentiable and any(e.dst in live for e in spec.out_edges(nid)):
            live.add(nid)
    return live


def initial_value(spec: NetworkSpec, seed: int, node_id: str, param: str) -> torch.Tensor:
    """The initial fp32 value of a written node's parameter: a function of (seed, node, param)."""
    impl = spec.nodes[node_id].impl
    gen = torch.Generator().manual_seed(stable_seed(seed, node_id, param))
    return impl.init_param(param, impl.param_shapes()[param], gen).float()


def build_vnodes(plan: ExecutionPlan | NetworkSpec, seed: int, device: torch.device,
                 only: Collection[str] | None = None) -> dict[str, VNode]:
    """Create the VNodes of the executed graph (all, or those in `only`) with initial parameters
    derived from (seed, written node, param): the same values wherever a VNode is built, fused or not.
    Given a `NetworkSpec` instead of a plan, its graph is built exactly as written."""
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
        vnodes[nid] = VNode(node, seed, params, ranks, grad_edges if nid in live else [], is_root, device)
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
        self.vnodes = build_vnodes(self.plan, self.seed, self.device)
        self.step = 0
        self._infer_counter = 0
        self._next_micro_batch = 0  # micro-batch index where the next train_step of this step starts
        fp16 = any("fp16" in (n.param_precision, n.activation_precision) for n in spec.nodes.values())
        self.scaler = LossScaler(enabled=fp16)
        self._live = backward_set(spec)
        self._edges = list(spec.edges)
        self._feeds: dict[tuple[str, int], int] = {(e.dst, e.dst_slot): i for i, e in enumerate(self._edges)}

    # -- helpers ------------------------------------------------------------------------
    def _needed(self, targets: set[str]) -> set[str]:
        return needed_nodes(self.spec, targets)

    def _check_inputs(self, inputs: Mapping[str, Any], needed: set[str]) -> dict[str, Any]:
        return check_inputs(self.spec, inputs, needed)

    def _run(self, rid: RequestId, inputs: Mapping[str, Any], needed: set[str], training: bool,
             micro_batches: int = 1) -> dict[tuple[str, int], Any]:
        """Deliver inputs and process messages until quiet; returns every produced output."""
        queue: deque[tuple[str, str, int, Any]] = deque()
        produced: dict[tuple[str, int], Any] = {}
        for b in self.spec.inputs:
            if b.node_id in needed and b.name in inputs:
                queue.append(("fwd", b.node_id, b.slot_id, inputs[b.name]))
        cost_roots = {b.node_id for b in self.spec.costs} if training else set()
        while queue:
            kind, nid, slot, value = queue.popleft()
            vnode = self.vnodes[nid]
            if kind == "fwd":
                ys = vnode.receive_input(rid, slot, value, training)
                if ys is None:
                    continue
                for s, y in enumerate(ys):
                    produced[(nid, s)] = y
                for e in self.spec.out_edges(nid):
                    if e.dst in needed:
                        queue.append(("fwd", e.dst, e.dst_slot, ys[e.src_slot]))
                if nid in cost_roots:
                    seed = torch.full_like(ys[0], self.scaler.scale / micro_batches)
                    self._send_grads(queue, nid, vnode.start_backward(rid, seed))
            else:
                gxs = vnode.receive_grad(rid, slot, value)
                if gxs is not None:
                    self._send_grads(queue, nid, gxs)
        return produced

    def _send_grads(self, queue: deque[tuple[str, str, int, Any]], nid: str,
                    grads: list[torch.Tensor | None]) -> None:
        for src, index, g in upstream_gradients(self._edges, self._feeds, self._live, nid, grads):
            queue.append(("bwd", src, index, g))

    # -- public API -------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        """Evaluate the network (no dropout, nothing cached); returns {output name: value}."""
        by_name = {b.name: b for b in self.spec.outputs}
        outputs = select_outputs(self.spec, set(inputs), outputs)
        needed = self._needed({by_name[n].node_id for n in outputs})
        batch = self._check_inputs(inputs, needed)
        self._infer_counter += 1
        rid = RequestId(self._infer_counter, 0, "infer")
        with torch.no_grad():
            produced = self._run(rid, batch, needed, training=False)
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
        needed = self._needed({b.node_id for b in self.spec.costs})
        batch = self._check_inputs(inputs, needed)
        chunks = split_batch(batch, micro_batches)
        totals = {b.name: 0.0 for b in self.spec.costs}
        try:
            for mb, chunk in enumerate(chunks):
                rid = RequestId(self.step, self._next_micro_batch + mb)
                with torch.no_grad():
                    produced = self._run(rid, chunk, needed, training=True, micro_batches=micro_batches)
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
        self.step += 1
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
        """Write parameters, optimizer state and step as a network artifact (`dcnr.runtime.artifact`)."""
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


def upstream_gradients(edges: Sequence[Edge], feeds: Mapping[tuple[str, int], int], live: Collection[str],
                       vnode: str, grads: Sequence[torch.Tensor | None],
                       ) -> Iterator[tuple[str, int, torch.Tensor | None]]:
    """Where a VNode's input gradients go: (upstream VNode, edge index, gradient) per input slot
    fed by an edge from a VNode that takes gradients; network inputs' gradients leave the network."""
    for slot, g in enumerate(grads):
        index = feeds.get((vnode, slot))
        if index is not None and edges[index].src in live:
            yield edges[index].src, index, g


def needed_nodes(spec: NetworkSpec, targets: Collection[str]) -> set[str]:
    """Nodes whose output the targets depend on (targets included)."""
    need = set(targets)
    for nid in reversed(spec.topo_order):
        if nid in need:
            need.update(e.src for e in spec.in_edges(nid))
    return need


def select_outputs(spec: NetworkSpec, given: set[str], outputs: Sequence[str] | None) -> list[str]:
    """The outputs to compute: those named (checked), or every one the given inputs allow."""
    by_name = {b.name: b for b in spec.outputs}
    if outputs is None:
        outputs = [name for name, b in by_name.items()
                   if all(i.name in given for i in spec.inputs if i.node_id in needed_nodes(spec, {b.node_id}))]
        if not outputs:
            raise ValueError("no network output can be computed from inputs "
                             f"{', '.join(map(repr, sorted(given))) or '(none)'}")
    for name in outputs:
        if name not in by_name:
            raise ValueError(f"unknown output {name!r}; outputs are {', '.join(map(repr, by_name))}")
    return list(outputs)


def check_inputs(spec: NetworkSpec, inputs: Mapping[str, Any], needed: set[str]) -> dict[str, Any]:
    """Inputs as batches; unknown names and missing needed inputs are errors."""
    names = {b.name for b in spec.inputs}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise ValueError(f"unknown input(s) {', '.join(map(repr, unknown))}; "
                         f"this network takes {', '.join(map(repr, sorted(names)))}")
    missing = sorted(b.name for b in spec.inputs if b.node_id in needed and b.name not in inputs)
    if missing:
        raise ValueError(f"missing input(s) {', '.join(map(repr, missing))}")
    return {k: _as_batch(k, v) for k, v in inputs.items()}


def _as_batch(name: str, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"input {name!r}: expected a tensor (or a list of strings), got {type(value).__name__}") from None


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    sizes = {k: (v.shape[0] if isinstance(v, torch.Tensor) and v.dim() else len(v)) for k, v in batch.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError("inputs have different batch sizes: "
                         + ", ".join(f"{k!r} {n}" for k, n in sorted(sizes.items())))
    for name, n in sizes.items():
        if n % parts:
            raise ValueError(f"input {name!r}: batch of {n} does not split into {parts} equal micro-batches")
    out = []
    for i in range(parts):
        chunk = {}
        for k, v in batch.items():
            size = sizes[k] // parts
            chunk[k] = v[i * size:(i + 1) * size]
        out.append(chunk)
    return out
