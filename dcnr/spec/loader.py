"""YAML -> `NetworkSpec`, reporting every problem at once as one line each.

Keys that are valid but change nothing (an `lr` on a `relu`) are not problems: they become
`NetworkSpec.warnings`, one line each in the same form.

Messages read `FILE: LOCATION: what was expected, got what`, where LOCATION names
the node (`nodes[3] 'head_0': config.head_dim`), the edge or the top-level key.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dcnr.errors import NetworkError, ShapeError
from dcnr.nodes.base import NodeType, Shape
from dcnr.nodes.registry import NODE_TYPES, canonical_type, suggest_type
from dcnr.nodes.values import parse_precision, short_repr
from dcnr.shapes import ANY, SymShape, exact, unify
from dcnr.spec.model import Binding, Edge, NetworkSpec, NodeSpec
from dcnr.spec.warnings import ignored_keys
from dcnr.validation.policy import DEFAULT as VALIDATION_DEFAULT
from dcnr.validation.policy import Policy

TOP_KEYS = {
    "name", "seed", "description", "precision", "param_precision", "activation_precision", "fuse", "validation",
    "nodes", "edges", "inputs", "outputs", "costs", "metrics",
}
NODE_KEYS = {"id", "type", "config", "input_shapes", "output_shapes"}
EDGE_KEYS = {"from", "to", "from_slot", "to_slot"}
BINDING_KEYS = {"name", "node_id", "slot_id", "type"}
METRIC_TYPES = ("learning_rate",)
MAX_OUTPUT_SLOTS = 65536  # shape inference builds one entry per output slot


def _closest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# every character str.splitlines() breaks on, written as an escape instead
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def _one_line(text: str) -> str:
    """A problem is one line even when an id or key holds a line break."""
    return text.translate(_LINE_BREAKS)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.lines.append(_one_line(f"{self.source}: {where}: {what}"))


def load_network(path: str | Path) -> NetworkSpec:
    """Read and validate a network file; raises `NetworkError` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetworkError([f"{p}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NetworkError([f"{p}: cannot read: {exc}"]) from None
    return parse_network(text, source=str(p))


def parse_stored_network(text: str, name: str) -> NetworkSpec:
    """A network stored under `name` (which may override the name inside its YAML)."""
    spec = parse_network(text, source=f"network {name!r}")
    return spec if spec.name == name else dataclasses.replace(spec, name=name)


def _load_yaml(text: str) -> Any:
    """The document in `text`, parsed by libyaml when PyYAML has it (with the same safe constructor; the
    pure-Python parser took 17 s on a 4 MiB definition); a document libyaml refuses is parsed again by
    PyYAML's own parser, whose messages say more (a tab is named as such)."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def parse_network(text: str, source: str = "<string>") -> NetworkSpec:
    """Validate a network given as YAML text (or an already-parsed mapping)."""
    try:
        doc = _load_yaml(text) if isinstance(text, str) else text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise NetworkError([_one_line(f"{source}: {where}: invalid YAML: {problem}")]) from None
    except (ValueError, RecursionError) as exc:  # a scalar the constructor rejects (2001-13-01), deep nesting
        detail = "nested too deeply" if isinstance(exc, RecursionError) else (str(exc).splitlines() or [""])[0]
        raise NetworkError([_one_line(f"{source}: invalid YAML: {detail}")]) from None
    if not isinstance(doc, dict):
        kind = "empty" if doc is None else type(doc).__name__
        raise NetworkError([f"{source}: expected a mapping with 'nodes' and 'edges' at the top level, got {kind}"])
    huge = _huge_ints(doc)
    if huge:
        raise NetworkError([_one_line(f"{source}: {where}: integer of more than {HUGE_INT_BITS} bits; no size, slot, "
                                      "id or seed is that large") for where in huge])
    return _Builder(doc, source, text if isinstance(text, str) else "").build()


HUGE_INT_BITS = 8192  # beyond this Python may refuse to print the number at all


def _huge_ints(doc: Any) -> list[str]:
    """Where a mapping given directly (not YAML text) holds an absurdly large int, key or value."""
    found: list[str] = []
    seen: set[int] = set()
    todo: list[tuple[Any, str]] = [(doc, "")]
    while todo:
        value, path = todo.pop()
        if isinstance(value, int) and value.bit_length() > HUGE_INT_BITS:
            found.append(path or "document")
        elif isinstance(value, (dict, list)) and id(value) not in seen:
            seen.add(id(value))
            if isinstance(value, list):
                todo.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
                continue
            for k, v in value.items():
                key = k if isinstance(k, str) else short_repr(k)
                todo.append((v, f"{path}.{key}" if path else key))
                if isinstance(k, int) and k.bit_length() > HUGE_INT_BITS:
                    found.append(f"{path}.{key}" if path else key)
    return sorted(found)


class _Builder:
    def __init__(self, doc: dict[str, Any], source: str, text: str) -> None:
        self.doc = doc
        self.source = source
        self.text = text
        self.p = _Problems(source)
        self.impls: dict[str, NodeType] = {}
        self.where: dict[str, str] = {}  # node id -> "nodes[3] 'id'"
        self.declared: dict[str, tuple[list[Shape] | None, list[Shape] | None]] = {}

    # -- top level ---------------------------------------------------------------
    def build(self) -> NetworkSpec:
        doc, p = self.doc, self.p
        for key in doc:
            if key not in TOP_KEYS:
                p.add(str(key), "unknown top-level key" + _closest(key, TOP_KEYS))
        name = doc.get("name", Path(self.source).stem)
        if not isinstance(name, str) or not name.strip():
            p.add("name", f"expected a non-empty string, got {short_repr(name)}")
            name = "network"
        seed = doc.get("seed", 0)
        if isinstance(seed, str) and seed.strip().lstrip("-").isdecimal() and seed.count("-") <= 1:
            seed = int(seed)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            p.add("seed", f"expected a non-negative integer, got {short_repr(seed)}")
            seed = 0
        fuse = doc.get("fuse", True)  # SPEC §6 passes (dcnr.spec.passes) on unless `fuse: false`
        if not isinstance(fuse, bool):
            p.add("fuse", f"expected true or false, got {short_repr(fuse)}")
            fuse = True
        validation = doc.get("validation", VALIDATION_DEFAULT)
        try:
            validation = str(Policy.parse(validation if isinstance(validation, str) else repr(validation)))
        except ValueError as exc:
            p.add("validation", str(exc))
            validation = VALIDATION_DEFAULT
        net_prec = {}
        for key in ("precision", "param_precision", "activation_precision"):
            value = doc.get(key)
            if value is None:
                continue
            try:
                net_prec[key] = parse_precision(value)
            except ValueError as exc:
                p.add(key, str(exc))

        self._nodes()
        edges = self._edges()
        inputs = self._bindings("inputs", required=False)
        outputs = self._bindings("outputs", required=False)
        costs = self._bindings("costs", required=False)
        metrics = self._bindings("metrics", required=False)
        self._check_bindings(inputs, outputs, costs, metrics)
        self._check_slots(edges, inputs)
        self._check_ties()
        order = self._topo_order(edges)
        shapes: dict[str, tuple[list[SymShape | None], list[SymShape | None]]] = {}
        if order is not None and not p.lines:
            shapes = self._infer_shapes(order, edges)
        if p.lines:
            raise NetworkError(p.lines)
        assert order is not None

        nodes: dict[str, NodeSpec] = {}
        warnings = [_one_line(f"{self.source}: {self.where[nid]}: config.{key}: ignored by this {_type_name(impl)}: "
                              f"{why}")
                    for nid, impl in self.impls.items() for key, why in ignored_keys(impl, _type_name(impl)).items()]
        for nid, impl in self.impls.items():
            cfg = impl.cfg
            param = cfg.param_precision or cfg.precision or net_prec.get("param_precision") or net_prec.get("precision")
            act = (cfg.activation_precision or cfg.precision or net_prec.get("activation_precision")
                   or net_prec.get("precision"))
            ins, outs = shapes[nid]
            nodes[nid] = NodeSpec(
                id=nid, type=_type_name(impl), impl=impl,
                input_shapes=_concrete(ins), output_shapes=_concrete(outs),
                symbolic_inputs=tuple(ins), symbolic_outputs=tuple(outs),
                param_precision=param or "float32", activation_precision=act or "float32",
            )
        return NetworkSpec(
            name=name.strip(), seed=seed, nodes=nodes, edges=tuple(edges), inputs=tuple(inputs),
            outputs=tuple(outputs), costs=tuple(costs), metrics=tuple(metrics),
            source=self.text, path=self.source, topo_order=tuple(order), warnings=tuple(warnings), fuse=fuse,
            validation=validation,
        )

    # -- nodes -------------------------------------------------------------------
    def _nodes(self) -> None:
        raw = self.doc.get("nodes")
        if raw is None:
            self.p.add("nodes", "missing: a network needs a list of nodes")
            return
        if not isinstance(raw, list) or not raw:
            self.p.add("nodes", f"expected a non-empty list of nodes, got {short_repr(raw)}")
            return
        seen: dict[str, int] = {}
        for i, node in enumerate(raw):
            here = f"nodes[{i}]"
            if not isinstance(node, dict):
                self.p.add(here, f"expected a mapping with id, type and config, got {short_repr(node)}")
                continue
            nid = node.get("id")
            if not isinstance(nid, (str, int)) or isinstance(nid, bool) or not str(nid).strip():
                self.p.add(f"{here}.id", f"expected a non-empty string, got {short_repr(nid)}")
                continue
            nid = str(nid).strip()
            here = f"nodes[{i}] {nid!r}"
            if nid in seen:
                self.p.add(here, f"duplicate id (first used by nodes[{seen[nid]}])")
                continue
            seen[nid] = i
            self.where[nid] = here
            for key in node:
                if key not in NODE_KEYS:
                    self.p.add(here, f"unknown key {key!r}" + _closest(key, NODE_KEYS))
            tname = node.get("type")
            if not isinstance(tname, str) or not tname.strip():
                self.p.add(f"{here}: type", f"expected a node type name, got {short_repr(tname)}")
                continue
            canon = canonical_type(tname)
            if canon is None:
                hint = suggest_type(tname)
                self.p.add(f"{here}: type", f"unknown node type {tname!r}"
                           + (f" (did you mean {hint!r}?)" if hint else ""))
                continue
            cls = NODE_TYPES[canon]
            config = node.get("config")
            config = {} if config is None else config
            if not isinstance(config, dict):
                self.p.add(f"{here}: config", f"expected a mapping, got {short_repr(config)}")
                continue
            try:
                cfg = cls.Config.model_validate({str(k): v for k, v in config.items()})
            except ValidationError as exc:
                for err in exc.errors():
                    self.p.add(f"{here}: " + ".".join(["config", *(str(x) for x in err["loc"])]),
                               _pydantic_message(err, cls))
                continue
            declared = [self._shapes(node, key, here) for key in ("input_shapes", "output_shapes")]
            if cfg.input_shape is not None:
                declared[0] = [cfg.input_shape, *(declared[0] or [])[1:]]
            if cfg.output_shape is not None:
                declared[1] = [cfg.output_shape, *(declared[1] or [])[1:]]
            impl = cls(nid, cfg)
            if impl.num_outputs > MAX_OUTPUT_SLOTS:
                key = "config.num_outputs" if "num_outputs" in cls.Config.model_fields else "outputs"
                self.p.add(f"{here}: {key}", f"expected at most {MAX_OUTPUT_SLOTS} output slots, "
                           f"got {impl.num_outputs}")
                continue
            self.declared[nid] = (declared[0], declared[1])
            self.impls[nid] = impl

    def _shapes(self, node: dict[str, Any], key: str, here: str) -> list[Shape] | None:
        raw = node.get(key)
        if raw is None:
            return None
        ok = isinstance(raw, list) and all(
            isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
            for s in raw
        )
        if not ok:
            self.p.add(f"{here}: {key}", f"expected a list of shapes like [[32, 64]], got {short_repr(raw)}")
            return None
        return [tuple(s) for s in raw]

    # -- edges and bindings --------------------------------------------------------
    def _edges(self) -> list[Edge]:
        raw = self.doc.get("edges", [])
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.p.add("edges", f"expected a list of edges, got {short_repr(raw)}")
            return []
        edges = []
        for i, e in enumerate(raw):
            here = f"edges[{i}]"
            if not isinstance(e, dict):
                self.p.add(here, f"expected a mapping with from and to, got {short_repr(e)}")
                continue
            for key in e:
                if key not in EDGE_KEYS:
                    self.p.add(here, f"unknown key {key!r}" + _closest(key, EDGE_KEYS))
            src, dst = e.get("from"), e.get("to")
            slots = [_slot(e.get("from_slot", 0)), _slot(e.get("to_slot", 0))]
            bad = False
            for key, value in (("from", src), ("to", dst)):
                if not isinstance(value, (str, int)) or isinstance(value, bool):
                    self.p.add(f"{here}.{key}", f"expected a node id, got {short_repr(value)}")
                    bad = True
            for key, s in zip(("from_slot", "to_slot"), slots, strict=True):
                if s is None:
                    self.p.add(f"{here}.{key}", f"expected a non-negative integer, got {short_repr(e.get(key))}")
                    bad = True
            if bad:
                continue
            edge = Edge(str(src), str(dst), slots[0] or 0, slots[1] or 0)
            known = True
            for key, nid in (("from", edge.src), ("to", edge.dst)):
                if nid not in self.where:
                    self.p.add(f"{here} ({edge})", f"{key}: unknown node {nid!r}" + _closest(nid, self.where))
                    known = False
            if known:
                edges.append(edge)
        return edges

    def _bindings(self, key: str, required: bool) -> list[Binding]:
        raw = self.doc.get(key)
        raw = [] if raw is None else raw
        if not isinstance(raw, list):
            self.p.add(key, f"expected a list of {{name, node_id, slot_id}}, got {short_repr(raw)}")
            return []
        out = []
        names: set[str] = set()
        for i, b in enumerate(raw):
            here = f"{key}[{i}]"
            if not isinstance(b, dict):
                self.p.add(here, f"expected a mapping with name, node_id and slot_id, got {short_repr(b)}")
                continue
            for k in b:
                if k not in BINDING_KEYS or (k == "type" and key != "metrics"):
                    self.p.add(here, f"unknown key {k!r}" + _closest(k, BINDING_KEYS))
            name, nid, slot = b.get("name"), b.get("node_id"), _slot(b.get("slot_id", 0))
            if not isinstance(name, str) or not name.strip():
                self.p.add(f"{here}.name", f"expected a non-empty string, got {short_repr(name)}")
                continue
            if name in names:
                self.p.add(f"{here}.name", f"duplicate name {name!r}")
            names.add(name)
            if slot is None:
                self.p.add(f"{here}.slot_id", f"expected a non-negative integer, got {short_repr(b.get('slot_id'))}")
                continue
            if not isinstance(nid, (str, int)) or str(nid) not in self.where:
                self.p.add(f"{here} {name!r}",
                           f"node_id: unknown node {short_repr(nid)}" + _closest(str(nid), self.where))
                continue
            mtype = b.get("type")
            if key == "metrics" and mtype not in METRIC_TYPES:
                self.p.add(f"{here} {name!r}",
                           f"type: expected one of {', '.join(METRIC_TYPES)}, got {short_repr(mtype)}")
                continue
            out.append(Binding(name.strip(), str(nid), slot, mtype if key == "metrics" else None))
        return out

    def _check_bindings(self, inputs: list[Binding], outputs: list[Binding],
                        costs: list[Binding], metrics: list[Binding]) -> None:
        for key, bindings in (("inputs", inputs), ("outputs", outputs), ("costs", costs), ("metrics", metrics)):
            for b in bindings:
                impl = self.impls.get(b.node_id)
                if impl is None:
                    continue
                count = impl.num_outputs if key != "inputs" else (impl.fixed_inputs() or 10**9)
                if b.slot_id >= count:
                    self.p.add(f"{key} {b.name!r}",
                               f"slot_id {b.slot_id} out of range: node {b.node_id!r} has {count} "
                               f"{'input' if key == 'inputs' else 'output'} slot(s)")
                if key == "costs" and not impl.is_cost:
                    self.p.add(f"costs {b.name!r}", f"node {b.node_id!r} is a {_type_name(impl)}, not a cost "
                               "(expected type cost or tied_lm_head_ce)")
                if key == "metrics" and not impl.param_shapes():
                    self.p.add(f"metrics {b.name!r}", f"node {b.node_id!r} has no parameters, so no learning rate")

    def _check_slots(self, edges: list[Edge], inputs: list[Binding]) -> None:
        fed: dict[tuple[str, int], str] = {}
        for b in inputs:
            fed[(b.node_id, b.slot_id)] = f"network input {b.name!r}"
        for e in edges:
            src, dst = self.impls.get(e.src), self.impls.get(e.dst)
            if src is not None and e.src_slot >= src.num_outputs:
                self.p.add(f"edge {e}", f"from_slot {e.src_slot} out of range: {e.src!r} has "
                           f"{src.num_outputs} output slot(s)")
            if dst is not None:
                fixed = dst.fixed_inputs()
                if fixed is not None and e.dst_slot >= fixed:
                    self.p.add(f"edge {e}", f"to_slot {e.dst_slot} out of range: {e.dst!r} has {fixed} input slot(s)")
                    continue
            key = (e.dst, e.dst_slot)
            if key in fed:
                self.p.add(f"edge {e}", f"input slot {e.dst_slot} of {e.dst!r} is already fed by {fed[key]}")
            fed[key] = f"edge {e}"
        fed_slots: dict[str, set[int]] = {}
        for n, s in fed:
            fed_slots.setdefault(n, set()).add(s)
        for nid, impl in self.impls.items():
            have = fed_slots.get(nid, set())
            fixed = impl.fixed_inputs()
            if fixed is None:
                count = 1 + max(have, default=-1)
                if count < impl.min_inputs():
                    self.p.add(self.where[nid], "has no input: connect at least one edge or network input")
                impl = self.impls[nid] = type(impl)(nid, impl.cfg, num_inputs=count)  # nodes are never mutated
            # walk the fed slots, not range(num_inputs): an edge-counted node's to_slot may be huge
            nxt = 0
            for slot in [*sorted(s for s in have if s < impl.num_inputs), impl.num_inputs]:
                if slot - nxt == 1:
                    self.p.add(self.where[nid], f"input slot {nxt} is not connected and is not a network input")
                elif slot > nxt:
                    self.p.add(self.where[nid], f"input slots {nxt} to {slot - 1} are not connected and are not "
                               "network inputs")
                nxt = slot + 1

    def _check_ties(self) -> None:
        publishers: dict[str, str] = {}
        for nid, impl in self.impls.items():
            for alias in impl.published():
                if alias in publishers:
                    self.p.add(self.where[nid], f"config.shared_weight_alias: {alias!r} is already "
                               f"published by {publishers[alias]!r}")
                else:
                    publishers[alias] = nid
            if impl.cfg.shared_weight_alias and not impl.published():
                self.p.add(self.where[nid],
                           f"config.shared_weight_alias: a {_type_name(impl)} has no weight to publish")
        for nid, impl in self.impls.items():
            tie = impl.cfg.tie_weight_alias
            if not tie:
                continue
            alias = tie
            if alias not in publishers:
                self.p.add(self.where[nid], f"config.tie_weight_alias: no node publishes {alias!r} "
                           "(set shared_weight_alias on the node that owns the weight)"
                           + _closest(alias, publishers))
                continue
            if not impl.tied():
                self.p.add(self.where[nid], f"config.tie_weight_alias: a {_type_name(impl)} has no weight to tie")
                continue
            pub = publishers[alias]
            if pub == nid:
                self.p.add(self.where[nid], f"config.tie_weight_alias: {alias!r} is this node's own weight")
                continue
            want = self.impls[pub].param_shapes()["weight"]
            have = impl.param_shapes()["weight"]
            if want != have:
                self.p.add(self.where[nid], f"config.tie_weight_alias: weight shape {list(have)} does not match "
                           f"{list(want)} published by {pub!r}")

    # -- graph order and shapes ------------------------------------------------------
    def _topo_order(self, edges: list[Edge]) -> list[str] | None:
        ids = list(self.impls)
        index = {nid: i for i, nid in enumerate(ids)}
        succ: dict[str, list[str]] = {nid: [] for nid in ids}
        indeg = dict.fromkeys(ids, 0)
        for e in edges:
            if e.src in succ and e.dst in succ:
                succ[e.src].append(e.dst)
                indeg[e.dst] += 1
        heap = [index[n] for n in ids if indeg[n] == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            n = ids[heapq.heappop(heap)]
            order.append(n)
            for m in succ[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    heapq.heappush(heap, index[m])
        if len(order) == len(ids):
            return order
        for cycle in _cycles({n: [m for m in succ[n] if indeg[m] > 0] for n in ids if indeg[n] > 0}):
            self.p.add("edges", "cycle: " + " -> ".join([*cycle, cycle[0]]))
        return None

    def _infer_shapes(self, order: list[str],
                      edges: list[Edge]) -> dict[str, tuple[list[SymShape | None], list[SymShape | None]]]:
        """Every slot's shape, node by node in topological order (see `dcnr.shapes`)."""
        result: dict[str, tuple[list[SymShape | None], list[SymShape | None]]] = {}
        incoming: dict[tuple[str, int], Edge] = {(e.dst, e.dst_slot): e for e in edges}
        for nid in order:
            impl = self.impls[nid]
            decl_in, decl_out = self.declared.get(nid, (None, None))
            ins: list[SymShape | None] = []
            for slot in range(impl.num_inputs):
                edge = incoming.get((nid, slot))
                shape = result[edge.src][1][edge.src_slot] if edge is not None else impl.default_input_shape(slot)
                want = decl_in[slot] if decl_in and slot < len(decl_in) else None
                if want is not None:
                    both = unify(shape, exact(want)) if shape is not None else None
                    if both is None and edge is not None:
                        self.p.add(self.where[nid], f"input slot {slot}: declared shape {list(want)} but edge "
                                   f"{edge} brings {_shape_text(shape)}")
                    elif both is None:  # no edge: the declaration replaces the type's default
                        shape = exact(want)
                    else:
                        shape = both
                ins.append(shape)
            try:
                outs = list(impl.infer_shapes(ins))
            except ShapeError as exc:
                origin = [f"{incoming[(nid, s)]} brings {_shape_text(sh)}" for s, sh in enumerate(ins)
                          if (nid, s) in incoming]
                self.p.add(self.where[nid], f"{exc}" + (f" (edge {'; '.join(origin)})" if origin else ""))
                outs = [ANY] * impl.num_outputs
            for slot, want in enumerate(decl_out or []):
                if slot >= len(outs):
                    continue
                have = outs[slot]
                both = unify(have, exact(want)) if have is not None else None
                if both is None:
                    self.p.add(self.where[nid], f"output slot {slot}: declared shape {list(want)} but the "
                               f"{_type_name(impl)} computes {_shape_text(have)}")
                else:
                    outs[slot] = both
            result[nid] = (ins, outs)
        return result


def _shape_text(shape: SymShape | None) -> str:
    return "text" if shape is None else str(shape)


def _concrete(shapes: list[SymShape | None]) -> tuple[Shape | None, ...]:
    return tuple(None if s is None else s.concrete for s in shapes)


def _slot(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _type_name(impl: NodeType) -> str:
    for name, cls in NODE_TYPES.items():
        if type(impl) is cls:
            return name
    raise AssertionError(f"{type(impl).__name__} is not in the catalog")


def _pydantic_message(err: Any, cls: type[NodeType]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        return "unknown key" + _closest(key, cls.Config.model_fields)
    if kind == "value_error":
        return str(err["ctx"]["error"])
    return f"{err['msg'].lower()}, got {short_repr(err.get('input'))}"


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle, each as one cycle path (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def enter(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        work.append((v, iter(graph.get(v, []))))

    def visit(root: str) -> None:  # iterative: a long chain must not hit the recursion limit
        enter(root)
        while work:
            v, succ = work[-1]
            for w in succ:
                if w not in index:
                    enter(w)
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in graph.get(v, []):
                        found.append(_cycle_path(comp, graph))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])

    work: list[tuple[str, Any]] = []
    for v in graph:
        if v not in index:
            visit(v)
    return found


def _cycle_path(comp: list[str], graph: dict[str, list[str]]) -> list[str]:
    """The shortest cycle through the component's first node (by id), by BFS."""
    members = set(comp)
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component always has a cycle")
