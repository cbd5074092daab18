"""Autograd over a graph: the forward pass through the inference Session's plan, then the backward rules in reverse.

`GraphAutograd` makes a model's graph trainable. It copies the graph and turns it into its training form:
BatchNormalization normalises with the batch statistics and produces updated running statistics, Dropout
draws its mask from the trainer's seeded generator. The trainable parameters (float initializers that reach
the output through a differentiable input, filtered by name patterns) and the running statistics become
inputs fed on every step, so the Session folds nothing that depends on them and never bakes an old value
into a prepared kernel; frozen parameters stay constants and fold like any inference weight.

The training step runs on the Session's plan (kernels bound once per input signature) with one arena for the
whole step. Its timeline is the forward steps, then the backward steps (the rules of the steps that reach the
loss, in reverse). A value a backward rule reads lives until that rule's step; the other activations die in the
forward pass as in inference. Each value's gradient is a buffer of the same arena, live from the backward step
that first adds to it to the step that consumes it (its producer's rule), so the gradients take the place of
the activations already used up. The planner places all of them at once, and merges a gradient with its output
gradient's buffer where the rule hands that on (ReLU and BatchNormalization write in place, Reshape passes a
view: vjp.GRAD_IN_PLACE). Rules are offered the buffer of each input's gradient and the big ones (Conv,
MaxPool) write straight into it; what a rule returns elsewhere is copied in, and a gradient with several
consumers is summed in its buffer. Values only a rule's shape bookkeeping needs are not kept (see vjp.SAVES);
a frozen parameter's gradient is neither computed nor given a buffer. The parameters' gradients are the step's
results and get arrays of their own, as a plan's outputs do. Workspace is planned too: Conv's rule states from
shapes the scratch it takes (vjp.WORKSPACE: the transposed gradient, the padded copies, the patches, the forward
kernel's own workspace) and gets an arena buffer live for its step alone; under mixed precision each float16 copy
a rule reads is widened into such a buffer. The other rules' temporaries (per-block masks, small reductions) are
arrays of their own.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import numpy as np

from ..errors import SporelingError
from ..ir import Graph, Node
from ..ir.graph import unique_name
from ..ops.registry import Info, OpDef
from ..runtime.session import Plan, Session, bind_kernel
from .vjp import GRAD_IN_PLACE, WORKSPACE, VJPContext, Workspace, saved_positions, vjp_for

# Inputs that never carry a gradient, whatever their dtype: shapes, indices, axes, running statistics.
NONDIFF: dict[str, frozenset[int]] = {
    op: frozenset(pos) for op, pos in {
        "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Gather": (1,), "GatherElements": (1,),
        "GatherND": (1,), "ScatterND": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "Pad": (1, 3),
        "Resize": (1, 2, 3),
        "Upsample": (1,), "TopK": (1,), "BatchNormalization": (3, 4), "Dropout": (1, 2), "Clip": (1, 2),
        "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "CumSum": (1,),
        "LSTM": (4,), "GRU": (4,), "RNN": (4,), "OneHot": (0, 1, 2), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    }.items()
}
INITIAL_STATES = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
# Ops whose outputs carry no gradient at all (integers, booleans, shapes).
NO_GRAD_OPS = frozenset({
    "Shape", "Size", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor",
    "ArgMax", "ArgMin", "NonZero", "IsNaN", "IsInf", "ConstantOfShape", "Range", "OneHot", "EyeLike",
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial",
})
FLOATS = (np.float16, np.float32, np.float64)


def _is_float(arr) -> bool:
    return isinstance(arr, np.ndarray) and arr.dtype in FLOATS


def _diff_inputs(node: Node) -> list[str]:
    skip = NONDIFF.get(node.op_type, frozenset())
    return [x for k, x in enumerate(node.inputs) if x and k not in skip]


def _grad_flow(graph: Graph, sources: set[str]) -> set[str]:
    """Names that depend on `sources` through differentiable inputs (graph order is topological)."""
    live = set(sources)
    for n in graph.nodes:
        if n.op_type not in NO_GRAD_OPS and any(x in live for x in _diff_inputs(n)):
            live.update(o for o in n.outputs if o)
    return live


def _reaches(graph: Graph, target: str) -> set[str]:
    """Names from which `target` can be reached through differentiable inputs."""
    need = {target}
    for n in reversed(graph.nodes):
        if n.op_type not in NO_GRAD_OPS and any(o in need for o in n.outputs if o):
            need.update(_diff_inputs(n))
    return need


def match_names(names, patterns, what: str) -> set[str]:
    """The names matching any of the glob patterns (fnmatch); a pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen: set[str] = set()
    for p in patterns:
        hit = {n for n in names if fnmatch.fnmatchcase(n, p)}
        if not hit:
            sample = ", ".join(sorted(names)[:6])
            raise SporelingError(f"{what} pattern '{p}' matches no parameter (parameters: {sample}, ...)")
        chosen |= hit
    return chosen


def _bn_training(node: Node, opset: int, taken: set[str]) -> tuple[str, str]:
    """Turns a BatchNormalization node into its training form, naming its running-statistic outputs."""
    outs = list(node.outputs) + [""] * (3 - len(node.outputs))
    for k in (1, 2):
        if not outs[k]:
            outs[k] = unique_name(f"{node.inputs[2 + k]}__running", taken)
    node.outputs = outs[:3]
    if opset >= 14:
        node.attrs["training_mode"] = 1
    else:
        node.attrs.pop("is_test", None)
    return outs[1], outs[2]


@dataclass
class Backward:
    """A plan's backward program, worked out with the plan: the forward and backward passes share its arena."""
    steps: list  # (step, diff flags, saved positions, offered buffers, merged position, widened, scratch), reversed
    wanted_params: dict[str, int]  # trainable parameter -> slot
    output_slot: int
    stash: dict[int, int]  # slot of a value -> slot of its float16 copy (mixed precision)
    error: str | None = None  # why this plan cannot be trained through (raised by backward, not by forward)
    buffers: dict[int, np.ndarray] = field(default_factory=dict)  # value slot -> its gradient's arena buffer
    arena: np.ndarray | None = None


class _TrainSession(Session):
    """The inference Session, planning the backward pass's gradients in the same arena as the activations, keeping
    what backward reads alive until the backward step that reads it, and drawing Dropout masks from our generator.

    The arena's timeline is the forward steps 0..F-1, then the backward steps F..F+B-1. A value a backward rule
    reads lives until that rule's step; a value's gradient lives from the step that first adds to it to the step
    that consumes it (its producer's rule). So the gradients take the place of the forward temporaries and of the
    activations already used up, and the arena is one static plan for the whole training step."""

    def __init__(self, graph: Graph, source: str, owner: "GraphAutograd"):
        super().__init__(graph, source, strict=False)
        self._owner = owner
        self._program: Backward | None = None

    def _bind(self, node: Node, op: OpDef, ins: list[Info | None], attrs: dict):
        if node.op_type == "Dropout":
            return _dropout_kernel(self._owner, attrs)
        return bind_kernel(op, ins, attrs)

    def prepare(self, feeds):
        plan = super().prepare(feeds)
        plan._bw, self._program = self._program, None
        return plan

    def _place(self, steps, slots, planned, template, infos):
        bw, keep, grads, merges, widen, work = self._owner._backward_program(steps, slots, infos)
        first, last = self._lifetimes(steps, slots, keep)

        def add(name, dt, shape, born, dies) -> int:
            slot = slots[name] = len(template)
            template.append(None)
            planned[name] = (dt, shape)
            first[slot], last[slot] = born, dies
            return slot

        gslot = {s: add(f"\0grad:{s}", *spec) for s, spec in grads.items()}
        wslot = {key: add(f"\0widen:{key[0]}:{key[1]}", dt, shape, t, t) for key, (dt, shape, t) in widen.items()}
        kslot = {j: add(f"\0work:{j}", np.dtype(np.uint8), (nbytes,), t, t) for j, (nbytes, t) in work.items()}
        owner = {gslot[s]: gslot[o] for s, o in merges.items()}
        arena = self._assign(steps, slots, planned, template, first, last, owner)
        bw.buffers = {s: template[g] for s, g in gslot.items()}
        widened: dict[int, dict] = {}
        for (j, pos), w in wslot.items():
            widened.setdefault(j, {})[pos] = template[w]
        bw.steps = [(st, needs, saved, tuple(None if s is None else bw.buffers[s] for s in offer), merged,
                     widened.get(j, {}), template[kslot[j]] if j in kslot else None)
                    for j, (st, needs, saved, offer, merged, *_) in enumerate(bw.steps)]
        if bw.buffers:
            bw.arena = _root(next(iter(bw.buffers.values())))
        self._program = bw
        return arena


def _root(a: np.ndarray) -> np.ndarray:
    while a.base is not None:
        a = a.base
    return a


def _dropout_kernel(owner, attrs):
    attr_ratio = float(attrs.get("ratio", 0.5))

    def dropout_train(data, ratio=None, training=None, *, out=None):
        r = attr_ratio if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
        y, mask = out if isinstance(out, tuple) else (np.empty_like(data), np.empty(data.shape, np.bool_))
        if not owner.training or r == 0:
            np.copyto(y, data)
            mask[...] = 1
            return y, mask
        keep = owner.rng.random(data.shape, dtype=np.float32) >= np.float32(r)
        np.multiply(data, keep, out=y)
        np.multiply(y, data.dtype.type(1.0 / (1.0 - r)), out=y)
        np.copyto(mask, keep, casting="unsafe")
        return y, mask

    return dropout_train


class GraphAutograd:
    """A graph in training form, its parameters and running statistics, and forward + backward over it."""

    def __init__(self, graph: Graph, source: str = "model", trainable=None, frozen=None, output: str | None = None,
                 seed: int = 0, stash_float16: bool = False):
        self.source = source
        self.graph = g = copy.copy(graph)
        g.nodes = [copy.copy(n) for n in graph.nodes]
        for n in g.nodes:
            n.attrs = dict(n.attrs)
            n.inputs, n.outputs = list(n.inputs), list(n.outputs)
        g.initializers = dict(graph.initializers)
        outputs = [v.name for v in g.outputs]
        if output is None:
            output = outputs[0]
        elif output not in outputs:
            raise SporelingError(f"{source}: no output '{output}' (outputs: {', '.join(outputs)})")
        self.output = output
        self.rng = np.random.default_rng(seed)
        self.training = True
        opset = g.opset
        taken = {x for n in g.nodes for x in list(n.inputs) + list(n.outputs)} | set(g.initializers)
        # running statistics: BN input mean/var that are initializers, updated from the node's extra outputs
        self.state: dict[str, np.ndarray] = {}
        # (value the node produces, state name, momentum, the node's input X, whether it is a variance)
        self.state_updates: list[tuple[str, str, float, str, bool]] = []
        bns = [n for n in g.nodes if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")
               and len(n.inputs) >= 5]
        _untie_identities(g)
        stats = {x for n in bns for x in n.inputs[3:5]}
        # parameters: float initializers (not 0-d constants) that reach the output through a differentiable input
        reach = _reaches(g, output)
        # a recurrent layer's initial state is differentiable, but a constant one (the zeros an exporter
        # folds in) is no parameter
        used = {x for n in g.nodes for k, x in enumerate(n.inputs)
                if x in _diff_inputs(n) and k not in INITIAL_STATES.get(n.op_type, ())}
        candidates = sorted(
            name for name, arr in g.initializers.items()
            if name in used and name in reach and name not in stats and _is_float(arr) and arr.ndim >= 1
        )
        self.all_parameters = candidates
        chosen = set(candidates) if trainable is None else match_names(candidates, trainable, "trainable")
        if frozen is not None:
            chosen -= match_names(candidates, frozen, "frozen")
        self.trainable = [n for n in candidates if n in chosen]
        # BatchNormalization trains (batch statistics, running ones updated) where its scale or shift learns;
        # under a frozen scale and shift (a frozen backbone) it keeps its running statistics, as fine-tuning does
        learning = set(self.trainable)
        for n in bns:
            if not any(x in learning or x not in g.initializers for x in n.inputs[1:3]):
                continue
            outs = _bn_training(n, opset, taken)
            for k, (src, name) in enumerate(zip(outs, n.inputs[3:5])):
                if name in g.initializers:
                    self.state[name] = np.array(g.initializers[name], copy=True)
                    momentum = float(n.attrs.get("momentum", 0.9))
                    self.state_updates.append((src, name, momentum, n.inputs[0], k == 1))
        for n in g.nodes:
            if n.op_type == "Dropout" and n.domain in ("", "ai.onnx"):
                while len(n.outputs) < 2 or not n.outputs[1]:
                    n.outputs = [n.outputs[0], unique_name(f"{n.outputs[0]}__mask", taken)]
        # the trainable parameters, as writable float arrays we own (optimizers update them in place)
        self.params: dict[str, np.ndarray] = {n: np.array(g.initializers[n], copy=True) for n in self.trainable}
        for n, arr in self.params.items():
            g.initializers[n] = arr
        for n, arr in self.state.items():
            g.initializers[n] = arr
        flow = _grad_flow(g, set(self.trainable))
        # the running statistics are read after the pass too, when they are copied into the state arrays
        self._keep = self._saved_values(g, flow) | {u[0] for u in self.state_updates}
        self.stash: dict[str, str] = {}  # value -> its float16 copy, which backward reads instead
        if stash_float16 and all(p.dtype == np.float32 for p in self.params.values()):
            self._stash_float16(g, flow, taken)
        self.session = _TrainSession(g, source, self)

    def _stash_float16(self, g: Graph, flow: set[str], taken: set[str]) -> None:
        """Mixed precision: each activation backward reads is copied to float16 by a Cast right after its node,
        and the copy is what stays alive for backward. The float32 original is then free once the forward pass
        has used it, so the arena holds half the bytes for what backward keeps; backward widens each copy back
        to float32 when its rule runs. Parameters and gradients stay float32."""
        outputs = {v.name for v in g.outputs}
        state_srcs = {u[0] for u in self.state_updates}
        nodes = []
        for n in g.nodes:
            nodes.append(n)
            y = n.outputs[0] if n.outputs else ""
            if (y and y in self._keep and y in flow and y not in outputs and y not in state_srcs
                    and n.op_type not in NO_GRAD_OPS and n.domain in ("", "ai.onnx")):
                half = unique_name(f"{y}__f16", taken)
                nodes.append(Node("Cast", [y], [half], {"to": 10}, f"{n.name or y}/stash_f16"))
                self.stash[y] = half
        g.nodes = nodes
        self._keep = (self._keep - set(self.stash)) | set(self.stash.values())

    # ---- what backward reads ---------------------------------------------------------------------
    @staticmethod
    def _saved_values(g: Graph, flow: set[str]) -> set[str]:
        keep: set[str] = set()
        for n in g.nodes:
            if not any(x in flow for x in _diff_inputs(n)):
                continue
            ins, outs = saved_positions(n.op_type, len(n.inputs), len(n.outputs))
            keep.update(n.inputs[k] for k in ins if k < len(n.inputs) and n.inputs[k])
            keep.update(n.outputs[k] for k in outs if k < len(n.outputs) and n.outputs[k])
        return keep

    # ---- forward and backward ----------------------------------------------------------------------
    def _feeds(self, feeds: dict) -> dict:
        """The data feeds, checked against the model's declared inputs as inference checks them, plus the
        parameters and running statistics."""
        full = self.session.check_feeds(feeds, strict=True)
        full.update(self.params)
        full.update(self.state)
        return full

    def forward(self, feeds: dict) -> tuple[Plan, list]:
        """Runs the training-form forward pass; returns the plan and its filled environment."""
        full = self._feeds(feeds)
        sess = self.session
        with sess._lock:
            plan = sess.plan_for(full)
            env = list(plan.template)
            for name, slot in plan.feed_slots:
                env[slot] = full[name]
            with np.errstate(all="ignore"):
                sess._execute(plan, env, None)
        return plan, env

    def output_of(self, plan: Plan, env: list) -> np.ndarray:
        return env[plan.slots[self.output]]

    def update_state(self, plan: Plan, env: list) -> None:
        """Copies the running statistics the BatchNormalization nodes produced into the state arrays. The
        running variance is PyTorch's, from the unbiased batch variance (ONNX's kernel averages the biased one),
        so a model trained here evaluates as it would after training in PyTorch."""
        for src, name, momentum, x_name, is_var in self.state_updates:
            slot = plan.slots.get(src)
            if slot is None or env[slot] is None:
                continue
            new, dst = env[slot], self.state[name]
            if is_var:
                shape = plan.shapes.get(x_name) or env[plan.slots[x_name]].shape
                count = int(np.prod(shape)) // max(int(shape[1]), 1)
                if count > 1:  # new = m*old + (1-m)*biased: rescale the batch part by count/(count-1)
                    old = dst.astype(np.float64) * momentum
                    new = old + (new.astype(np.float64) - old) * (count / (count - 1))
            np.copyto(dst, new, casting="unsafe")

    def backward(self, plan: Plan, env: list, grad_output: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the trainable parameters, given the gradient of the loss at the chosen output (copied into
        the plan's buffer for it: rules may write into the gradients they are given, the caller's array is left
        alone). The parameters' gradients are the step's results: arrays of their own, never the arena."""
        bw: Backward = plan._bw
        if bw.error:
            raise SporelingError(bw.error)
        opset = self.graph.opsets
        grads: dict[int, np.ndarray] = {}
        buf = bw.buffers.get(bw.output_slot)
        if buf is not None:
            np.copyto(buf, grad_output, casting="same_kind")
            grads[bw.output_slot] = buf
        else:
            grads[bw.output_slot] = np.array(grad_output, copy=True)
        with self.session._lock, np.errstate(all="ignore"):
            for st, needs, saved, offer, merged, widened, scratch in bw.steps:
                gs = [grads.pop(o, None) if o >= 0 else None for o in st.outs]
                if all(x is None for x in gs):
                    continue
                node = st.node
                ins = [_value(env, s, saved, k, bw.stash, widened) for k, s in enumerate(st.ins[: len(node.inputs)])]
                outs = [_value(env, o, saved, len(ins) + k, bw.stash, widened) for k, o in enumerate(st.outs)]
                version = opset.get(node.domain or "", 1)
                if node.op_type == "Dropout":
                    version = max(version, 12)
                    ins = ins + [None] * (3 - len(ins))
                    ins[2] = np.array(self.training)
                # a buffer is offered only while its value has no gradient yet (a rule may have given none before)
                out = [b if b is not None and s not in grads else None for s, b in zip(st.ins, offer)]
                ctx = VJPContext(node.op_type, dict(node.attrs), ins, outs, gs, list(needs), version, out,
                                 None if scratch is None else Workspace(scratch))
                try:
                    res = vjp_for(node.op_type)(ctx)
                except SporelingError:
                    raise
                except Exception as e:
                    raise SporelingError(f"{self.source}: backward of {node.label()} failed: "
                                         f"{type(e).__name__}: {e}") from e
                # the input whose gradient shares the output gradient's buffer goes last: the others may be
                # views of that gradient, and must be read before it is overwritten
                order = [k for k in range(len(res)) if k != merged] + ([merged] if 0 <= merged < len(res) else [])
                returned: list[np.ndarray] = []
                for k in order:
                    gi = res[k]
                    if k < len(needs) and needs[k] and gi is not None:
                        _store(grads, st.ins[k], gi, bw, returned)
        return {name: grads[slot] for name, slot in bw.wanted_params.items() if slot in grads}

    def _backward_program(self, steps, slots: dict[str, int], infos: dict) -> tuple:
        """The backward program of a plan being prepared (the steps that reach the loss, in reverse, with what
        each reads and wants), and what the arena needs for it: until when each kept value is read (name ->
        time), each planned gradient's (dtype, shape, first time, last time) by value slot, which gradients
        share their output gradient's buffer (value slot -> value slot), and under mixed precision the float32
        buffer each float16 copy a rule reads is widened into ((step index, position) -> (dtype, shape, time)), and
        the scratch bytes of the rules that state them (vjp.WORKSPACE; step index -> (bytes, time)).
        Times: forward steps 0..F-1, backward steps F.. on."""
        names = {s: n for n, s in slots.items()}
        n_fwd = len(steps)

        def info(s):
            return infos.get(names.get(s, ""))

        def may_be_float(s):  # unknown dtypes (kernels without shape inference) may carry a gradient
            i = info(s)
            return i is None or i.dtype is None or np.dtype(i.dtype) in FLOATS

        params = {slots[n]: n for n in self.trainable if n in slots}
        requires = set(params)
        fwd = []
        for st in steps:
            node = st.node
            skip = NONDIFF.get(node.op_type, frozenset())
            needs = tuple(k < len(node.inputs) and k not in skip and s in requires and may_be_float(s)
                          for k, s in enumerate(st.ins))
            if any(needs) and node.op_type not in NO_GRAD_OPS:
                requires.update(o for o in st.outs if o >= 0 and may_be_float(o))
                fwd.append((st, needs))
        out_slot = slots[self.output]
        stash = {slots[v]: slots[h] for v, h in self.stash.items() if v in slots and h in slots}
        keep = self._keep
        if out_slot not in requires:
            bw = Backward([], {}, out_slot, stash,
                          f"{self.source}: output '{self.output}' does not depend on any trainable parameter")
            return bw, {k: n_fwd for k in keep}, {}, {}, {}, {}
        need = {out_slot}
        order = []
        missing = set()
        for st, needs in reversed(fwd):
            if not any(o in need for o in st.outs):
                continue
            if (st.op is not None and st.op.context) or st.node.domain not in ("", "ai.onnx"):
                missing.add(f"{st.node.domain}:{st.node.op_type}" if st.node.domain else st.node.op_type)
                continue
            try:
                vjp_for(st.node.op_type)
            except SporelingError:
                missing.add(st.node.op_type)
            need.update(s for s, w in zip(st.ins, needs) if w)
            order.append((st, needs))
        error = None
        if missing:
            error = f"{self.source}: cannot train through ops without a backward rule: {', '.join(sorted(missing))}"
        # when each kept value is last read: by the backward step that reads it, else (running statistics,
        # values of branches that do not reach the loss) at the end of the backward pass
        end = n_fwd + len(order)
        reads: dict[str, int] = {}
        born: dict[int, int] = {out_slot: n_fwd}
        dies: dict[int, int] = {}
        widen: dict[tuple[int, int], tuple] = {}
        work: dict[int, tuple[int, int]] = {}
        program = []
        for j, (st, needs) in enumerate(order):
            t = n_fwd + j
            node = st.node
            ins, outs = saved_positions(node.op_type, len(node.inputs), len(st.outs))
            saved = frozenset(ins) | frozenset(len(node.inputs) + k for k in outs)
            for pos in saved:
                s = st.ins[pos] if pos < len(node.inputs) else st.outs[pos - len(node.inputs)]
                name = names.get(stash.get(s, s)) if s >= 0 else None
                if name in keep:
                    reads[name] = t  # backward order: the last step to read it comes last
                if s in stash and _static(info(s)):
                    widen[(j, pos)] = (np.dtype(np.float32), tuple(int(d) for d in info(s).shape), t)
            for o in st.outs:
                if o in need and o >= 0:
                    dies.setdefault(o, t)
            for s, w in zip(st.ins, needs):
                if w and s not in params:
                    born.setdefault(s, t)
            if node.op_type in WORKSPACE:
                specs = [[(i.dtype, i.shape) if _static(i) else None for i in map(info, slots_)]
                         for slots_ in (st.ins[: len(node.inputs)], st.outs)]
                nbytes = WORKSPACE[node.op_type](*specs, dict(node.attrs), needs)
                if nbytes > 0:
                    work[j] = (nbytes, t)
            program.append((st, needs, saved))
        grads = {}
        for s, t in dies.items():
            i = info(s)
            if s in born and _static(i) and np.dtype(i.dtype) in FLOATS:
                grads[s] = (np.dtype(i.dtype), tuple(int(d) for d in i.shape), born[s], t)
        merges: dict[int, int] = {}
        steps_out = []
        for j, (st, needs, saved) in enumerate(program):
            t = n_fwd + j
            merged = -1
            o = st.outs[0] if st.outs else -1
            for k in GRAD_IN_PLACE.get(st.node.op_type, ()):
                s = st.ins[k] if k < len(st.ins) else -1
                if (k < len(needs) and needs[k] and s in grads and o in grads and born[s] == t
                        and grads[s][:2] == grads[o][:2] and s not in merges and st.ins.count(s) == 1):
                    merges[s] = merges.get(o, o)
                    merged = k
                    break
            offer = tuple(None if k == merged or not w or s not in grads or born[s] != t or st.ins.count(s) > 1
                          else s for k, (s, w) in enumerate(zip(st.ins, needs)))
            steps_out.append((st, needs, saved, offer, merged, None, None))
        bw = Backward(steps_out, {n: s for s, n in params.items() if s in need}, out_slot, stash, error)
        return bw, {name: reads.get(name, end) for name in keep}, grads, merges, widen, work


def _static(info) -> bool:
    """Whether a value's dtype and shape are known when the plan is prepared."""
    return (info is not None and info.dtype is not None and info.shape is not None
            and all(isinstance(d, (int, np.integer)) and d >= 0 for d in info.shape))
def _store(grads: dict, s: int, gi: np.ndarray, bw: Backward, returned: list) -> None:
    """Adds a rule's gradient for value slot s: into the gradient s already has, else into s's arena buffer
    (nothing to copy when the rule wrote it there, or handed on its output gradient planned there), else -- a
    parameter's gradient, handed out as the step's result, or a value of unknown shape -- as an array of its
    own: copied when it is read-only, lies in the arena, or shares memory with another of this step's results
    (Add hands one array to both inputs)."""
    prev = grads.get(s)
    if prev is not None:
        if prev.shape == gi.shape and prev.dtype == gi.dtype:
            np.add(prev, gi, out=prev)
        else:
            grads[s] = prev + gi
        return
    buf = bw.buffers.get(s)
    if buf is not None:
        if not _same_array(gi, buf):
            np.copyto(buf, gi, casting="same_kind")
        grads[s] = buf
        return
    if (not gi.flags.writeable or (bw.arena is not None and np.may_share_memory(gi, bw.arena))
            or any(np.may_share_memory(gi, r) for r in returned)):
        gi = gi.copy()
    returned.append(gi)
    grads[s] = gi


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a is b's memory in b's layout (b contiguous): a rule wrote into the buffer, or passed it on."""
    return (a.shape == b.shape and a.dtype == b.dtype and a.flags.c_contiguous
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _value(env: list, slot: int, saved: frozenset, position: int, stash: dict[int, int], widened: dict):
    """A forward value for a backward rule: the value itself if the rule reads it (under mixed precision widened
    from its float16 copy, into the arena buffer planned for it at this step), otherwise a stand-in of its shape
    and dtype that costs no memory (the arena may have reused the value's buffer by now)."""
    if slot < 0:
        return None
    v = env[slot]
    if position in saved and slot in stash:
        buf = widened.get(position)
        if buf is None:
            return env[stash[slot]].astype(np.float32)
        np.copyto(buf, env[stash[slot]])
        return buf
    if position in saved or not isinstance(v, np.ndarray):
        return v
    return np.broadcast_to(np.zeros((), v.dtype), v.shape)


def _untie_identities(g: Graph) -> None:
    """PyTorch's exporter (eval mode) merges initializers of equal value -- a fresh model's zero biases and unit
    norm scales, a BN running mean equal to its bias -- leaving Identity nodes of the one it kept under the
    others' names. Trained as found, all of them would be one tied parameter. Each such Identity becomes an
    initializer of its own under its (PyTorch) name, so they train apart; an Identity that is a graph output
    stays a node."""
    outputs = {v.name for v in g.outputs}
    kept = []
    for n in g.nodes:  # topological order, so a chain of Identities unties from its head on
        if (n.op_type == "Identity" and n.domain in ("", "ai.onnx") and n.inputs and n.inputs[0] in g.initializers
                and n.outputs[0] not in outputs):
            g.initializers[n.outputs[0]] = g.initializers[n.inputs[0]]
        else:
            kept.append(n)
    g.nodes = kept

