"""The Session: prepare once per input-shape signature, then run kernels only.

prepare() walks the graph in order with what is known of each value (dtype, shape, and the value
itself when it is constant). A node whose inputs are all constant is evaluated right there, which
folds shape subgraphs (Shape -> Gather -> Concat -> Reshape) away. Every other node gets its output
shapes from its op's infer function, and a step: a bound kernel with the slots it reads and writes.
Outputs with a static shape whose kernel can write into a given buffer are placed in one arena by
the memory planner; graph outputs get fresh buffers each run, so results never alias the arena;
what remains (data-dependent shapes, kernels that allocate) is produced by the kernel at run time.

run() then only binds feeds and calls the steps. Plans are cached per signature of input shapes
and dtypes, so dynamic shapes work and each new signature pays one prepare.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import FeedError, KernelError, SporelingError, UnsupportedOpError
from ..ir import Graph, Node, verify
from ..memory.planner import ALIGN, ArenaPlan, Buffer, plan_arena
from ..ops.registry import Info, OpDef, lookup
from .context import Context

# Plans kept per session; each holds its own arena, so a model fed many shapes stays bounded.
MAX_PLANS = 8

# How a step delivers its outputs.
RETURNS, WRITES = 0, 1


@dataclass
class Step:
    fn: Callable[..., Any]
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    mode: int
    fresh: tuple[tuple[int, np.dtype, tuple], ...] = ()  # outputs that get a new buffer each run
    node: Node | None = None
    scratch: int = -1  # slot of the step's workspace, if it has one
    op: OpDef | None = None


@dataclass
class Plan:
    steps: list[Step]
    template: list[Any]  # slot -> constant, arena view, or None
    feed_slots: list[tuple[str, int]]
    output_slots: list[tuple[str, int]]
    arena: ArenaPlan
    shapes: dict[str, tuple] = field(default_factory=dict)
    folded: int = 0
    slots: dict[str, int] = field(default_factory=dict)  # value name -> index into template / env


def unsupported_ops(graph: Graph, opsets: dict[str, int] | None = None) -> list[str]:
    """Every op of the graph and its subgraphs that has no kernel, as 'domain:Op' strings."""
    opsets = opsets or graph.opsets
    missing: set[str] = set()
    for n in graph.nodes:
        if lookup(n.op_type, opsets.get(n.domain or "", 1), n.domain) is None:
            missing.add(f"{n.domain + ':' if n.domain else ''}{n.op_type}")
        for g in n.subgraphs():
            missing.update(unsupported_ops(g, opsets))
    return sorted(missing)


def bind_kernel(op: OpDef, ins: list[Info | None], attrs: dict[str, Any]) -> Callable[..., Any]:
    if op.make is not None:
        return op.make(ins, **attrs)
    return functools.partial(op.kernel, **attrs) if attrs else op.kernel


class Session:
    def __init__(self, graph: Graph, source: str = "model", strict: bool = True):
        verify(graph)
        missing = unsupported_ops(graph)
        if missing:
            raise UnsupportedOpError(f"{source}: unsupported ops ({len(missing)}): {', '.join(missing)}")
        self.graph = graph
        self.source = source
        self.defs = [lookup(n.op_type, graph.opsets.get(n.domain or "", 1), n.domain) for n in graph.nodes]
        self._plans: dict[tuple, Plan] = {}
        self.inputs = [v for v in graph.inputs if v.name not in graph.initializers]
        self._overridable = {v.name for v in graph.inputs if v.name in graph.initializers}
        self.strict = strict  # check feed names, dtypes and shapes against the declared inputs
        self.max_plans = MAX_PLANS
        self._lock = threading.RLock()

    # ---- feeds -------------------------------------------------------------------------------
    def check_feeds(self, feeds: dict[str, Any], strict: bool | None = None) -> dict[str, np.ndarray]:
        """Feeds checked against the declared inputs (names, dtypes, shapes) when strict (default: the
        session's own setting); the training runtime checks the data this way before adding its parameters."""
        if not (self.strict if strict is None else strict):  # a subgraph body, fed by its control-flow kernel
            return {k: v if v is None or isinstance(v, (list, np.ndarray)) else np.asarray(v) for k, v in feeds.items()}
        declared = {v.name: v for v in self.inputs}
        unknown = [k for k in feeds if k not in declared and k not in self._overridable]
        if unknown:
            raise FeedError(f"{self.source}: unknown input '{unknown[0]}' (inputs: {', '.join(declared)})")
        missing = [k for k in declared if k not in feeds]
        if missing:
            raise FeedError(f"{self.source}: missing input '{missing[0]}'")
        out = {}
        for name, arr in feeds.items():
            v = declared.get(name)
            if not isinstance(arr, np.ndarray):
                if (arr is None or isinstance(arr, (list, tuple))) and v is not None and v.dtype is None:
                    out[name] = arr  # a sequence, or an empty optional
                    continue
                arr = np.asarray(arr)
            if v is not None and v.dtype is not None and arr.dtype != v.dtype:
                raise FeedError(f"{self.source}: input '{name}' has dtype {arr.dtype}, expected {v.dtype}")
            if v is not None and v.shape is not None:
                if arr.ndim != len(v.shape) or any(
                    isinstance(d, int) and d >= 0 and d != s for d, s in zip(v.shape, arr.shape)
                ):
                    want = "[" + ",".join(str(d) if isinstance(d, int) else "?" for d in v.shape) + "]"
                    raise FeedError(f"{self.source}: input '{name}' has shape {list(arr.shape)}, expected {want}")
            out[name] = np.asarray(arr, order="C")  # keeps 0-d scalars 0-d
        return out

    # ---- run ---------------------------------------------------------------------------------
    def run(self, feeds: dict[str, Any], times: dict[str, float] | None = None) -> dict[str, Any]:
        """Runs the model. With `times`, each op type's seconds are added to it (profiling).
        Runs of one session are serialised: they share the plan's arena (NumPy releases the GIL, so
        two unguarded runs would write over each other). Load a model twice to run it in parallel."""
        feeds = self.check_feeds(feeds)
        with self._lock:
            return self._run(feeds, times)

    def _run(self, feeds: dict[str, Any], times: dict[str, float] | None) -> dict[str, Any]:
        plan = self.plan_for(feeds)
        env = list(plan.template)
        for name, slot in plan.feed_slots:
            if name in feeds:
                env[slot] = feeds[name]
        with np.errstate(all="ignore"):  # IEEE results (inf, nan) as other engines give, without warnings
            self._execute(plan, env, times)
        fed = {id(a) for a in feeds.values()}
        return {name: _own(env[slot], copy or id(env[slot]) in fed) for name, slot, copy in plan.output_slots}

    def _execute(self, plan: Plan, env: list, times: dict | None) -> None:
        step = None
        try:
            for step in plan.steps:
                if times is not None:
                    t0 = time.perf_counter()
                args = [env[i] if i >= 0 else None for i in step.ins]
                if step.mode == WRITES:
                    for slot, dtype, shape in step.fresh:
                        env[slot] = np.empty(shape, dtype)
                    if len(step.outs) == 1:
                        step.fn(*args, out=env[step.outs[0]])
                    else:
                        step.fn(*args, out=tuple(env[o] if o >= 0 else None for o in step.outs))
                else:
                    result = step.fn(*args)
                    if len(step.outs) == 1:
                        # kernels of ops with optional extra outputs may return a tuple for one output
                        env[step.outs[0]] = result[0] if type(result) is tuple else result
                    else:
                        for o, r in zip(step.outs, result):
                            if o >= 0:
                                env[o] = r
                if times is not None:
                    op = step.node.op_type
                    times[op] = times.get(op, 0.0) + time.perf_counter() - t0
        except SporelingError:
            raise
        except Exception as e:  # a kernel failed: name the node, keep the cause chained
            raise KernelError(f"{self.source}: {step.node.label()} failed: {type(e).__name__}: {e}") from e

    def plan_for(self, feeds: dict[str, Any]) -> Plan:
        """The plan for these (checked) feeds' shapes and dtypes, prepared on first use."""
        key = tuple(
            (k, a.dtype.str, a.shape) if isinstance(a, np.ndarray) else (k, type(a).__name__, 0) for k, a in feeds.items()
        )
        with self._lock:  # also called from outside run() (sporeling info, bench)
            plan = self._plans.pop(key, None)
            if plan is None:
                with np.errstate(all="ignore"):  # folding runs kernels too: same IEEE results as run()
                    plan = self.prepare(feeds)
                while len(self._plans) >= self.max_plans:  # least recently used goes, with its arena
                    del self._plans[next(iter(self._plans))]
            self._plans[key] = plan  # (re)inserted last: dict order is recency order
        return plan

    # ---- prepare -----------------------------------------------------------------------------
    def prepare(self, feeds: dict[str, Any]) -> Plan:
        g = self.graph
        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            if name not in slots:
                slots[name] = len(slots)
            return slots[name]

        infos: dict[str, Info] = {}
        consts: dict[str, Any] = {}
        for name, arr in g.initializers.items():
            if name not in feeds:
                infos[name] = Info(arr.dtype, arr.shape, arr)
                consts[name] = arr
        for name, arr in feeds.items():
            if isinstance(arr, np.ndarray):
                infos[name] = Info(arr.dtype, arr.shape, None)
            else:
                infos[name] = Info(None, None, None)
        graph_outputs = {v.name for v in g.outputs}
        steps: list[Step] = []
        planned: dict[str, tuple[np.dtype, tuple]] = {}
        folded = 0
        for node, op in zip(g.nodes, self.defs):
            ins = [infos.get(i) if i else None for i in node.inputs]
            outer = sorted({x for sg in node.subgraphs() for x in sg.outer_names()}) if op.context else []
            foldable = (
                op.pure
                and node.inputs
                and all(i is None or i.value is not None for i in ins)
                and all(x in consts for x in outer)
            )
            if foldable:
                try:
                    results = self._call(node, op, [consts[i] if i else None for i in node.inputs], outer, consts)
                except SporelingError:
                    raise
                except Exception as e:
                    raise KernelError(f"{self.source}: {node.label()} failed: {type(e).__name__}: {e}") from e
                results = results if isinstance(results, tuple) else (results,)
                for name, r in zip(node.outputs, results):
                    if name:
                        consts[name] = r
                        infos[name] = Info(*_info_of(r), r if isinstance(r, np.ndarray) else None)
                folded += 1
                continue
            attrs = dict(node.attrs)
            out_infos = None
            if op.infer is not None and not op.context:
                try:
                    out_infos = op.infer(ins, **attrs)
                except Exception:  # inputs infer cannot handle: the kernel runs unplanned and, if
                    out_infos = None  # the inputs really are wrong, fails at run with the node named
            if out_infos is not None and out_infos and all(len(o) == 3 and o[2] is not None for o in out_infos):
                # infer knew the values too (Shape, Size of a known shape): the node folds away
                for name, (dt, shp, value) in zip(node.outputs, out_infos):
                    if name:
                        consts[name] = value
                        infos[name] = Info(value.dtype, value.shape, value)
                folded += 1
                continue
            try:
                fn = self._bind(node, op, ins, attrs)
                nbytes = int(op.scratch(ins, **attrs)) if op.scratch is not None and op.out else 0
            except SporelingError:
                raise
            except Exception as e:  # make() or scratch() rejected the node's inputs
                raise KernelError(f"{self.source}: {node.label()} cannot run on its inputs: "
                                  f"{type(e).__name__}: {e}") from e
            if op.context:
                fn = _with_context(fn, len(node.inputs), outer, g.opsets)
            in_slots = tuple(slot(i) if i else -1 for i in node.inputs) + tuple(slot(x) for x in outer)
            mode = RETURNS
            if out_infos is not None and op.out:
                # omitted outputs of a writing kernel still need somewhere to go: a private slot
                node_outs = [o or f"\0{node.name}:{k}:{len(steps)}" for k, o in enumerate(node.outputs)]
            else:
                node_outs = list(node.outputs)
            out_slots = tuple(slot(o) if o else -1 for o in node_outs)
            fresh = []
            if out_infos is not None and op.out:
                mode = WRITES
                for name, (dt, shp, *_) in zip(node_outs, out_infos):
                    info = (np.dtype(dt), tuple(int(d) for d in shp))
                    infos[name] = Info(info[0], info[1], None)
                    if name in graph_outputs or info[0] == object:  # strings cannot live in a byte arena
                        fresh.append((slots[name], *info))
                    else:
                        planned[name] = info
            else:
                for k, name in enumerate(node.outputs):
                    if name:
                        if out_infos is not None and k < len(out_infos):
                            dt, shp = out_infos[k][:2]
                            infos[name] = Info(np.dtype(dt), tuple(int(d) for d in shp), None)
                        else:
                            infos[name] = Info(None, None, None)
            scratch_slot = -1
            if mode == WRITES and nbytes > 0:  # workspace: an arena buffer live for this step only
                scratch_name = f"\0scratch:{len(steps)}"
                scratch_slot = slot(scratch_name)
                planned[scratch_name] = (np.dtype(np.uint8), (nbytes,))
            steps.append(Step(fn, in_slots, out_slots, mode, tuple(fresh), node, scratch_slot, op))
        for v in g.outputs:
            slot(v.name)
        template: list[Any] = [None] * len(slots)
        for name, value in consts.items():
            if name in slots:
                template[slots[name]] = value
        arena = self._place(steps, slots, planned, template, infos)
        for st in steps:
            if st.scratch >= 0:
                st.fn = functools.partial(st.fn, scratch=template[st.scratch])
        feed_slots = [(name, slots[name]) for name in feeds if name in slots]
        output_slots = [(v.name, slots[v.name], template[slots[v.name]] is not None) for v in g.outputs]
        shapes = {name: i.shape for name, i in infos.items() if i.shape is not None}
        return Plan(steps, template, feed_slots, output_slots, arena, shapes, folded, slots)

    def _place(self, steps, slots, planned, template, infos) -> ArenaPlan:
        """Lifetimes of planned values, in-place merging, then greedy placement into one arena."""
        first, last = self._lifetimes(steps, slots, {})
        return self._assign(steps, slots, planned, template, first, last, {})

    def _lifetimes(self, steps, slots, keep: dict[str, int]) -> tuple[dict[int, int], dict[int, int]]:
        """First and last step of each slot. `keep` extends values past the steps: name -> the last time they
        are read (len(steps) or later; the training session reads values during its backward pass)."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for k, st in enumerate(steps):
            for s in st.ins:
                if s >= 0:
                    last[s] = k
            for s in st.outs + ((st.scratch,) if st.scratch >= 0 else ()):
                if s >= 0:
                    first.setdefault(s, k)
                    last.setdefault(s, k)
        for name in [v.name for v in self.graph.outputs]:
            if name in slots:  # read after the last step: results handed out
                last[slots[name]] = len(steps)
        for name, until in keep.items():
            if name in slots:
                last[slots[name]] = max(last.get(slots[name], until), until)
        # A kernel that returns its result may return a view of an input (Reshape, Squeeze...), so
        # its inputs stay alive as long as its outputs do. Walking backwards carries this along chains.
        for st in reversed(steps):
            if st.mode == RETURNS:
                end = max((last.get(o, -1) for o in st.outs if o >= 0), default=-1)
                for s in st.ins:
                    if s >= 0 and last.get(s, -1) < end:
                        last[s] = end
        return first, last

    def _assign(self, steps, slots, planned, template, first, last, owner: dict[int, int]) -> ArenaPlan:
        """Merges in-place outputs with the inputs they overwrite (on top of the merges in `owner`, slot -> slot
        whose buffer it shares), places the buffers and fills the template with their arena views."""
        owner = dict(owner)
        for k, st in enumerate(steps):
            if st.mode != WRITES or not st.op.inplace:
                continue
            for o_idx, i_idx in st.op.inplace.items():
                if o_idx >= len(st.outs) or i_idx >= len(st.ins):
                    continue
                o, i = st.outs[o_idx], st.ins[i_idx]
                oname, iname = st.node.outputs[o_idx], st.node.inputs[i_idx]
                if (
                    o >= 0 and i >= 0 and oname in planned and iname in planned
                    and planned[oname] == planned[iname]
                    and last.get(i) == k
                    and st.ins.count(i) == 1
                ):
                    root = owner.get(i, i)
                    owner[o] = root
        names = {s: n for n, s in slots.items()}
        groups: dict[int, list[int]] = {}
        for name in planned:
            s = slots[name]
            groups.setdefault(owner.get(s, s), []).append(s)
        buffers, members = [], []
        for root, group in groups.items():
            dt, shp = planned[names[root]]
            nbytes = max(1, int(np.prod(shp, dtype=np.int64)) * dt.itemsize)
            buffers.append(Buffer(nbytes, min(first[s] for s in group), max(last[s] for s in group)))
            members.append(group)
        arena_plan = plan_arena(buffers)
        arena = _aligned_bytes(arena_plan.arena_size)
        for b, group in zip(buffers, members):
            for s in group:
                dt, shp = planned[names[s]]
                n = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
                template[s] = arena[b.offset : b.offset + n].view(dt).reshape(shp)
        return arena_plan

    def _bind(self, node: Node, op: OpDef, ins: list[Info | None], attrs: dict[str, Any]) -> Callable[..., Any]:
        """A step's kernel for its inputs' infos (runtime.lazy's session wraps it to decode weights first)."""
        return bind_kernel(op, ins, attrs)

    def _call(self, node: Node, op: OpDef, args: list, outer: list[str], env: dict[str, Any]):
        fn = bind_kernel(op, [None if a is None else Info(*_info_of(a), a) for a in args], dict(node.attrs))
        if op.context:
            return fn(*args, ctx=Context({x: env[x] for x in outer}, self.graph.opsets))
        return fn(*args)


def _aligned_bytes(nbytes: int) -> np.ndarray:
    """A byte buffer starting on an ALIGN boundary (NumPy only promises 16 bytes), so that every
    planned offset, a multiple of ALIGN, is cache-line aligned too."""
    raw = np.empty(max(nbytes, 1) + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + max(nbytes, 1)]


def _with_context(fn, n_inputs: int, outer: list[str], opsets: dict[str, int]):
    def call(*args):
        return fn(*args[:n_inputs], ctx=Context(dict(zip(outer, args[n_inputs:])), opsets))

    return call


def _info_of(x) -> tuple:
    if isinstance(x, np.ndarray):
        return x.dtype, x.shape
    if isinstance(x, np.generic):
        return x.dtype, ()
    return None, None


def _own(x, constant: bool):
    """Results handed to the user never alias the arena, a feed or the model's constants."""
    if isinstance(x, np.ndarray) and (constant or x.base is not None):
        return x.copy()
    if isinstance(x, list):
        return [_own(e, constant) for e in x]
    return x
