"""The VNode: one node of the network as a self-contained agent.

A VNode receives values for a request id slot by slot, fires its forward when all
slots are in, caches what its backward needs under that id, fires its backward when
a gradient has arrived on every output edge that leads to a cost, accumulates its
parameter gradients in a fixed order, and applies its own optimizer on `update`.
It never reaches into another VNode; a tied weight is the one exception the spec
makes (tied nodes are always colocated) and goes through a shared `Parameter`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from dcnr.data.vocabularies import Vocabularies
from dcnr.nodes.base import Context, Value, sum_in_order
from dcnr.runtime.optim import learning_rate, make_optimizer
from dcnr.runtime.precision import DTYPES
from dcnr.spec.model import NodeSpec

DONE_MEMORY = 4096  # finished request ids remembered per VNode for duplicate detection


class RequestId(NamedTuple):
    """A unit of work: one micro-batch of one run. The run keeps two runs of the same step (a fenced run
    and its retry) apart; step and micro-batch alone seed random masks, so the retry draws the same ones."""

    run: str
    step: int
    micro_batch: int
    kind: str = "train"  # "train" | "eval" | "infer"

    def __str__(self) -> str:
        return f"{self.run}/{self.kind}:{self.step}.{self.micro_batch}"


class StepClock:
    """The training step of one network in one process: its one owner, read by every VNode of the network
    (learning-rate schedules) and advanced by whoever ends a step (the executor, or the PNode's host)."""

    __slots__ = ("step",)

    def __init__(self, step: int = 0) -> None:
        self.step = step


@dataclass
class Parameter:
    """An fp32 master tensor and its gradient, accumulated in a fixed order.

    Contributions are keyed (micro-batch, contributor rank) and added strictly in
    that order whatever order they arrive in, so the sum is bit-identical however
    the work was scheduled (SPEC §2).
    """

    master: torch.Tensor
    contributors: int = 1  # VNodes computing with it (a tied weight has several)
    grad: torch.Tensor | None = None
    _pending: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    _cursor: int = 0  # index of the next (micro_batch, rank) to add
    version: int = 0  # bumped whenever master changes; invalidates compute copies
    _borrowed: bool = False  # `grad` is still the first contributor's own tensor (not copied)

    def accumulate(self, micro_batch: int, rank: int, grad: torch.Tensor) -> None:
        assert 0 <= rank < self.contributors
        key = (micro_batch, rank)
        assert key not in self._pending, f"gradient for {key} added twice"
        self._pending[key] = grad.float()
        while True:
            key = divmod(self._cursor, self.contributors)
            g = self._pending.pop(key, None)
            if g is None:
                break
            if self.grad is None:  # kept as given: no copy unless a second contribution comes
                self.grad, self._borrowed = g, True
            elif self._borrowed:  # never write into a tensor the contributor handed over
                self.grad, self._borrowed = self.grad + g, False
            else:
                self.grad.add_(g)
            self._cursor += 1

    def settled(self) -> bool:
        return not self._pending

    def zero_grad(self) -> None:
        self.grad = None
        self._borrowed = False
        self._pending.clear()
        self._cursor = 0


class VNode:
    """Hosts one node type instance with its parameters, optimizer and caches."""

    def __init__(
        self,
        spec: NodeSpec,
        network_seed: int,
        params: dict[str, Parameter],
        ranks: dict[str, int],
        grad_edges: list[tuple[int, int]],
        is_cost_root: bool,
        device: torch.device,
        vocabularies: Vocabularies | None = None,
        clock: StepClock | None = None,
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self.impl = spec.impl
        self.seed = network_seed
        self.params = params  # local name -> Parameter (tied ones shared with the publisher)
        self.ranks = ranks  # local name -> my contributor rank for that parameter
        self.owned = [n for n in params if n not in spec.impl.tied()]
        self.grad_edges = grad_edges  # (edge index, output slot) of edges leading to a cost, in edge order
        self.is_cost_root = is_cost_root
        self.device = device
        self.vocabularies = vocabularies if vocabularies is not None else Vocabularies()  # for text nodes
        self.param_dtype = DTYPES[spec.param_precision]
        self.act_dtype = DTYPES[spec.activation_precision]
        self.clock = clock or StepClock()  # the network's step, shared with the other VNodes of this process
        self.optimizer = (
            make_optimizer(spec.config, [params[n].master for n in self.owned]) if self.owned else None
        )
        self._compute: dict[str, tuple[int, torch.Tensor]] = {}
        self._inputs: dict[RequestId, dict[int, Value]] = {}
        self._contexts: dict[RequestId, Context] = {}
        self._grads: dict[RequestId, dict[int, torch.Tensor | None]] = {}
        # requests whose forward already fired (duplicates are ignored); bounded, oldest forgotten first
        self._done: OrderedDict[RequestId, None] = OrderedDict()

    # -- parameters ----------------------------------------------------------------
    def _compute_params(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, p in self.params.items():
            if self.param_dtype == torch.float32:
                out[name] = p.master
                continue
            cached = self._compute.get(name)
            if cached is None or cached[0] != p.version:
                cached = (p.version, p.master.to(self.param_dtype))
                self._compute[name] = cached
            out[name] = cached[1]
        return out

    @property
    def step(self) -> int:
        """Training steps the network has been updated through (the clock's, not this VNode's own)."""
        return self.clock.step

    def learning_rate(self) -> float:
        return learning_rate(self.spec.config, self.step)

    # -- forward -------------------------------------------------------------------
    def receive_input(self, rid: RequestId, slot: int, value: Value, training: bool) -> list[Value] | None:
        """Store one input slot; returns the outputs when this completes the request.

        A duplicate or late message for a request already fired is ignored.
        """
        if rid in self._done:
            return None
        slots = self._inputs.setdefault(rid, {})
        slots[slot] = value
        if len(slots) < self.impl.num_inputs:
            return None
        del self._inputs[rid]
        self._done[rid] = None
        if len(self._done) > DONE_MEMORY:
            self._done.popitem(last=False)
        return self.run_forward(rid, [slots[i] for i in range(self.impl.num_inputs)], training)

    def run_forward(self, rid: RequestId, xs: list[Value], training: bool) -> list[Value]:
        xs = [self._cast(x) for x in xs]
        keep = training and (self.grad_edges or self.is_cost_root) and self.impl.differentiable
        ctx = Context(self._compute_params(), training, (self.seed, self.id, rid.step, rid.micro_batch),
                      vocabularies=self.vocabularies)
        ys = self.impl.forward(ctx, xs)
        if keep:
            self._contexts[rid] = ctx
        return ys

    def _cast(self, x: Value) -> Value:
        if isinstance(x, torch.Tensor):
            x = x.to(self.device)
            if x.is_floating_point() and x.dtype != self.act_dtype:
                x = x.to(self.act_dtype)
        return x

    # -- backward ------------------------------------------------------------------
    def receive_grad(self, rid: RequestId, edge: int, grad: torch.Tensor | None) -> list[torch.Tensor | None] | None:
        """Store the gradient from one output edge; returns input gradients when the
        last expected edge arrives. Duplicates and grads for unknown requests are ignored."""
        if rid not in self._contexts:
            return None
        got = self._grads.setdefault(rid, {})
        if edge in got:
            return None
        got[edge] = grad
        if len(got) < len(self.grad_edges):
            return None
        del self._grads[rid]
        # per output slot, the gradients of its edges summed in edge order
        moved = {i: g.to(self.device) if g is not None else None for i, g in got.items()}
        gys = [sum_in_order(moved[i] for i, slot in self.grad_edges if slot == out)
               for out in range(self.impl.num_outputs)]
        return self.run_backward(rid, gys)

    def start_backward(self, rid: RequestId, seed: torch.Tensor) -> list[torch.Tensor | None]:
        """For a cost: `seed` is d(total)/d(this loss) = loss scale / micro-batches."""
        return self.run_backward(rid, [seed] + [None] * (self.impl.num_outputs - 1))

    def run_backward(self, rid: RequestId, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        ctx = self._contexts.pop(rid)
        # a gradient arrives in the sender's dtype (an fp16 neighbour of an fp32 node, or the
        # reverse): bring it to this node's activation dtype, like the forward's inputs
        gys = [g.to(self.act_dtype) if g is not None and g.is_floating_point() and
               g.dtype != self.act_dtype and not self.impl.is_cost else g for g in gys]
        if all(g is None for g in gys):
            return [None] * self.impl.num_inputs
        grads_in = self.impl.backward(ctx, gys)
        for name, g in ctx.param_grads.items():
            self.params[name].accumulate(rid.micro_batch, self.ranks[name], g)
        return grads_in

    def pending(self) -> int:
        """Requests with unfinished work here: waiting for inputs, or for gradients of their cached forward."""
        return len(self._inputs) + len(self._contexts)

    def holds(self, rid: RequestId) -> bool:
        """Whether unfinished work of this request waits here."""
        return rid in self._inputs or rid in self._contexts or rid in self._grads

    def drop(self, rid: RequestId) -> None:
        """Forget everything about a request (abandoned work)."""
        self._inputs.pop(rid, None)
        self._contexts.pop(rid, None)
        self._grads.pop(rid, None)

    def end_step(self) -> None:
        """Forget the request ids of the finished step (bounded duplicate detection)."""
        self._done.clear()

    def abandon_step(self) -> None:
        """Forget all unfinished work and request ids of the current step, so it can be redone."""
        self._inputs.clear()
        self._contexts.clear()
        self._grads.clear()
        self.end_step()

    # -- update --------------------------------------------------------------------
    def grads_finite(self) -> bool:
        for name in self.owned:
            g = self.params[name].grad
            # min and max in one pass: both finite iff every element is (NaN propagates)
            if g is not None and g.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(g))).all()):
                return False
        return True

    def grad_norm(self) -> float:
        """The L2 norm of the accumulated gradients of its own parameters (0 without any)."""
        total = 0.0
        for name in self.owned:
            g = self.params[name].grad
            if g is not None:
                total += float(torch.linalg.vector_norm(g.float())) ** 2
        return total ** 0.5

    def apply_update(self, loss_scale: float, apply: bool) -> None:
        """Unscale and apply the optimizer (or skip, on overflow) at the clock's step; clear gradients.
        The clock's owner advances the step once every VNode of the network is updated."""
        if self.optimizer is not None and apply:
            lr = self.learning_rate()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            for name in self.owned:
                p = self.params[name]
                assert p.settled(), f"{self.id}.{name}: gradients still pending at update"
                p.master.grad = None if p.grad is None else p.grad if loss_scale == 1.0 else p.grad / loss_scale
            self.optimizer.step()
            for name in self.owned:
                self.params[name].master.grad = None
                self.params[name].version += 1
        for name in self.owned:
            self.params[name].zero_grad()
        self.end_step()

    # -- state -----------------------------------------------------------------------
    def state(self, copy: bool = True) -> dict[str, torch.Tensor]:
        """What this VNode holds: its own parameters (`param/<name>`, fp32 masters) and optimizer state
        (`optim/<name>/<key>`), copied (`load_state(state(), step)` restores it exactly) or, with
        `copy=False`, the live tensors (to read at once, never to keep)."""
        out = {f"param/{name}": self.params[name].master.detach() for name in self.owned}
        out.update({f"optim/{key}": t.detach() for key, t in self.optimizer_state().items()})
        return {k: t.clone() for k, t in out.items()} if copy else out

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        """Optimizer state as flat tensors: `<param>/<key>`."""
        if self.optimizer is None:
            return {}
        out = {}
        state = self.optimizer.state
        for name in self.owned:
            for key, value in state.get(self.params[name].master, {}).items():
                out[f"{name}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        return out

    def load_state(self, state: dict[str, torch.Tensor], step: int) -> None:
        """Take parameters (`param/<name>`, exactly the owned ones, same shapes), optimizer state
        (`optim/<name>/<key>`) and step: what a checkpoint or an artifact holds for this VNode."""
        params = {k[len("param/"):]: t for k, t in state.items() if k.startswith("param/")}
        if set(params) != set(self.owned):
            raise ValueError(f"VNode {self.id!r} owns parameters {sorted(self.owned)}, got {sorted(params)}")
        for name, t in params.items():
            if tuple(t.shape) != tuple(self.params[name].master.shape):
                raise ValueError(f"{self.id}.{name}: expected shape {list(self.params[name].master.shape)}, "
                                 f"got {list(t.shape)}")
        for name, t in params.items():
            self.params[name].master.copy_(t.to(self.params[name].master))
            self.params[name].version += 1
        self.load_optimizer_state({k[len("optim/"):]: t for k, t in state.items() if k.startswith("optim/")})
        self.clock.step = step  # the network is at that step

    def load_optimizer_state(self, flat: dict[str, torch.Tensor]) -> None:
        if self.optimizer is None:
            return
        for name in self.owned:
            master = self.params[name].master
            entry: dict[str, Any] = {}
            for key, value in flat.items():
                pname, _, skey = key.rpartition("/")
                if pname == name:
                    # copies: the optimizer updates its state in place, never the caller's tensors
                    entry[skey] = value.to(master.device, copy=True) if skey != "step" else value.to("cpu", copy=True)
            if entry:
                self.optimizer.state[master] = entry
            else:
                self.optimizer.state.pop(master, None)
