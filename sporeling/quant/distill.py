"""Data-free judging inputs distilled from the statistics a model's BatchNormalization layers keep.

A trained network's BatchNormalization layers remember the mean and standard deviation of what reached them in
training, per channel. Inputs optimised until every such layer sees those statistics again (ZeroQ, Cai et al.,
2020) make the network respond more as it did to its training data than white noise does. compress judges its
searches on them in place of random inputs, alone or beside calibration inputs, where a model qualifies
(distill_refusal): it has such statistics, one float input to optimise, and no layer that normalises by
statistics computed at run time (LayerNormalization, or its decomposed form: x less ReduceMean(x)). Those keep
nothing to match, so nothing holds what reaches them to anything real, and there the distilled inputs judged
PP-OCR rec (a convolutional backbone, then transformer layers) far too leniently (real cosine 0.982-0.992 at
three seeds). On the models that normalise with BatchNormalization alone they judged closer to the real inputs
than noise in both directions: PP-OCR det and cls came out 23% and 26% smaller at the cosine on real inputs,
two CNNs trained on Fashion-MNIST 15-29% larger, and noise lost the cosine and a point and more of accuracy on
one of those at two seeds of three, where distilled inputs kept both at every seed (benchmarks/README.md).

A model trained by sporeling itself is exported with its BatchNormalization folded (`sporeling train -o`), so
it keeps no statistics to distil from and is judged on random inputs (or on --calib).

The loss, for each layer and each sample: the squared distance of each channel's mean over its positions
from the running mean, and of its standard deviation from the running one, both in units of the running
standard deviation, averaged over the channels. The loss is the mean of that over the layers and samples.
It is built as graph nodes on the imported model before BatchNormalization is folded away, and
GraphAutograd gives the gradient at the input. Adam moves the input, starting from seeded white noise.
The samples are optimised in batches of at most BATCH_INPUT_BYTES of input, which bounds the memory the
backward pass holds (PP-OCR det at 192x384: about 90 bytes of activations per byte of input).
"""

from __future__ import annotations

import copy
import glob
import time

import numpy as np

from ..errors import SporelingError
from ..ir import Graph, Node, ValueInfo
from ..ir.graph import unique_name
from ..tools import concrete_shape

DISTILL_SAMPLES = 8  # inputs distilled in place of the random ones
DISTILL_STEPS = 100
DISTILL_LR = 0.1  # Adam's, on inputs that start as standard normal noise
PROGRESS_EVERY = 25
_FLOOR = 1e-5  # under each variance before its square root: a constant channel still has a gradient
BATCH_INPUT_BYTES = 4 << 20  # input bytes optimised together
# normalisations by statistics of the data in hand, none kept in the file
RUNTIME_NORMALIZATIONS = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
                          "MeanVarianceNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
                          "SkipSimplifiedLayerNormalization"}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal"}


def batchnorm_statistics(graph: Graph) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(the value a BatchNormalization normalises, its running mean, its running standard deviation) for each
    BatchNormalization of the graph's top level whose running statistics are constants."""
    found = []
    for n in graph.nodes:
        if n.op_type != "BatchNormalization" or n.domain not in ("", "ai.onnx") or len(n.inputs) < 5:
            continue
        mean, var = graph.initializers.get(n.inputs[3]), graph.initializers.get(n.inputs[4])
        if mean is None or var is None or np.ndim(mean) != 1 or np.shape(mean) != np.shape(var):
            continue
        std = np.sqrt(np.asarray(var, np.float64) + float(n.attrs.get("epsilon", 1e-5)))
        found.append((n.inputs[0], np.asarray(mean, np.float32), std.astype(np.float32)))
    return found


def distillable_input(graph: Graph, fixed: dict | None) -> ValueInfo | None:
    """The input that distillation optimises: the one input not fixed, when it is float32; else None."""
    free = [v for v in graph.inputs if v.name not in graph.initializers and v.name not in (fixed or {})]
    return free[0] if len(free) == 1 and free[0].dtype in (None, np.dtype(np.float32)) else None


def runtime_normalizations(graph: Graph) -> list[str]:
    """The nodes of the graph's top level that normalise by statistics computed at run time: the operators of
    RUNTIME_NORMALIZATIONS, and each ReduceMean of a value v (or of v squared) whose result, through at most
    four elementwise steps, meets v again (x - mean(x), x / sqrt(mean(x^2) + eps): a decomposed layer norm)."""
    producer = {o: n for n in graph.nodes for o in n.outputs}
    users: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for v in set(n.inputs):
            users.setdefault(v, []).append(n)
    return [n.name or n.op_type for n in graph.nodes
            if n.op_type in RUNTIME_NORMALIZATIONS or (n.op_type == "ReduceMean" and _meets_again(n, producer, users))]


def _meets_again(mean: Node, producer: dict[str, Node], users: dict[str, list[Node]]) -> bool:
    """Whether the ReduceMean's result, through at most four elementwise nodes, is combined with the value it
    averaged (or with the value whose square it averaged)."""
    if not mean.inputs:
        return False
    data = {mean.inputs[0]}
    square = producer.get(mean.inputs[0])
    if square is not None and square.op_type in ("Pow", "Mul") and square.inputs:
        data.add(square.inputs[0])
    frontier = list(mean.outputs)
    for _ in range(4):
        step = [(v, u) for v in frontier for u in users.get(v, []) if u.op_type in _ELEMENTWISE]
        if any(data & (set(u.inputs) - {v}) for v, u in step):
            return True
        frontier = [o for _, u in step for o in u.outputs]
    return False


def distill_refusal(graph: Graph, fixed: dict | None, asked: bool = False) -> str | None:
    """Why distillation does not judge this model, or None when it does: no BatchNormalization statistics,
    not one float input to optimise, or, unless `asked` for, layers that normalise at run time."""
    if not batchnorm_statistics(graph):
        return "the model keeps no BatchNormalization statistics"
    if distillable_input(graph, fixed) is None:
        return "the model does not have exactly one float32 input to optimise"
    norms = [] if asked else runtime_normalizations(graph)
    if norms:
        more = f" and {len(norms) - 1} more" if len(norms) > 1 else ""
        return (f"the model normalises by statistics computed at run time ({norms[0]}{more}), and there distilled "
                f"inputs have judged too leniently (PP-OCR rec); --distill (distill=True) asks for them all the same")
    return None


def loss_graph(graph: Graph, x: str, start: np.ndarray, taps) -> tuple[Graph, str]:
    """A copy of `graph` whose input `x` is an initializer holding `start`, with one scalar output: the
    distillation loss over `taps` (batchnorm_statistics). The model's own outputs are dropped."""
    g = copy.copy(graph)
    g.nodes = list(graph.nodes)
    g.initializers = dict(graph.initializers)
    g.inputs = [v for v in graph.inputs if v.name != x]
    g.value_info = dict(graph.value_info)
    g.initializers[x] = start
    taken = {o for n in g.nodes for o in list(n.inputs) + list(n.outputs)} | set(g.initializers)
    axes_as_input = g.opset >= 18

    def const(base: str, value) -> str:
        name = unique_name(f"distill__{base}", taken)
        taken.add(name)
        g.initializers[name] = np.asarray(value)
        return name

    def node(op: str, ins: list[str], base: str, **attrs) -> str:
        out = unique_name(f"distill__{base}", taken)
        taken.add(out)
        g.nodes.append(Node(op, ins, [out], attrs, out))
        return out

    def mean(v: str, base: str, axes: list[int] | None) -> str:
        if axes is None:
            return node("ReduceMean", [v], base, keepdims=0)
        if axes_as_input:
            return node("ReduceMean", [v, const("axes", np.array(axes, np.int64))], base, keepdims=1)
        return node("ReduceMean", [v], base, axes=axes, keepdims=1)

    flat, eps, one = const("flat", np.array([0, 0, -1], np.int64)), const("eps", np.float32(_FLOOR)), \
        const("one", np.float32(1.0))
    terms = []
    for k, (value, mu, std) in enumerate(taps):
        z = node("Reshape", [value, flat], f"z{k}")  # (N, C, positions)
        m = mean(z, f"mean{k}", [2])
        c = node("Sub", [z, m], f"centred{k}")
        v = mean(node("Mul", [c, c], f"sq{k}"), f"var{k}", [2])
        s = node("Sqrt", [node("Add", [v, eps], f"floored{k}")], f"std{k}")
        inv = const(f"inv{k}", (1.0 / std).reshape(1, -1, 1).astype(np.float32))
        a = node("Mul", [node("Sub", [m, const(f"mu{k}", mu.reshape(1, -1, 1))], f"dm{k}"), inv], f"a{k}")
        b = node("Sub", [node("Mul", [s, inv], f"ratio{k}"), one], f"b{k}")
        both = node("Add", [node("Mul", [a, a], f"a2{k}"), node("Mul", [b, b], f"b2{k}")], f"t{k}")
        terms.append(mean(both, f"term{k}", None))
    total = node("Sum", terms, "sum") if len(terms) > 1 else terms[0]
    loss = node("Mul", [total, const("scale", np.float32(1.0 / len(terms)))], "loss")
    g.outputs = [ValueInfo(loss, np.dtype(np.float32), ())]
    return g, loss


def _optimise(graph: Graph, x: str, batch: np.ndarray, taps, feeds: dict, steps: int,
              say=lambda s: None, batches: int = 0) -> tuple[float, float]:
    """Adam on `batch` (in place) for `steps` steps; the loss before and after. Says the loss every
    PROGRESS_EVERY steps and, given how many `batches` like this one there are, after its second step about
    how long they all take (when that is 10 s or more)."""
    from ..runtime.threads import apply_threads, default_threads
    from ..train.autograd import GraphAutograd
    from ..train.optim import Adam

    apply_threads(default_threads())  # as a Model's run does: on 2 BLAS threads here, PP-OCR cls took 13x as long
    g, _ = loss_graph(graph, x, batch.copy(), taps)
    trainer = GraphAutograd(g, source="distillation", trainable=[glob.escape(x)])
    if x not in trainer.params:
        raise SporelingError(f"no gradient reaches the input {x!r}")
    trainer.training = False
    opt = Adam(lr=DISTILL_LR)
    first = value = np.nan
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step also builds the plans
        plan, env = trainer.forward(feeds)
        value = float(trainer.output_of(plan, env))
        first = value if step == 0 else first
        if step == 2 and batches and (took := (time.perf_counter() - start) * steps * batches) >= 10:
            say(f"  about {took:.0f} s in all")
        if step and step % PROGRESS_EVERY == 0 and step < steps:
            say(f"  step {step}/{steps}: loss {value:.4f}")
        if step == steps or not np.isfinite(value):
            break
        opt.step(trainer.params, trainer.backward(plan, env, np.ones((), np.float32)))
    batch[...] = trainer.params[x]
    return first, value


def distilled_feeds(graph: Graph, shapes: dict, fixed: dict | None = None,
                    samples: int = DISTILL_SAMPLES, steps: int = DISTILL_STEPS, seed: int = 0,
                    say=lambda s: None) -> tuple[list[dict], dict] | None:
    """`samples` feeds for `graph` (imported, BatchNormalization not yet folded) whose distillable input, of
    its shape in `shapes` or its declared one (symbolic dimensions 1, as the random inputs'), is optimised for
    `steps` Adam steps until the BatchNormalization layers see their running statistics, with the `fixed`
    inputs as given; and what the distillation did (layers, steps, loss at the start and end). None when the
    model has no such statistics or no single float input to optimise, or when the distillation fails (a
    layer without a backward rule) or diverges. The samples are optimised together, in batches of at most
    BATCH_INPUT_BYTES of input, where the model's batch dimension is free, else one at a time."""
    taps = batchnorm_statistics(graph)
    spec = distillable_input(graph, fixed)
    if not taps or spec is None:
        return None
    x = spec.name
    shape = tuple(shapes.get(x) or concrete_shape(spec.shape))
    if len(shape) < 2 or shape[0] != 1:
        return None
    fits = max(1, BATCH_INPUT_BYTES // (4 * int(np.prod(shape[1:], dtype=np.int64))))
    batch = min(samples, fits) if not spec.shape or not isinstance(spec.shape[0], int) or spec.shape[0] < 1 else 1
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((samples,) + shape[1:]).astype(np.float32)
    feeds = {k: np.asarray(v) for k, v in (fixed or {}).items()}
    say(f"distilling {samples} inputs from the statistics of {len(taps)} BatchNormalization layers "
        f"({steps} steps)")
    losses = []  # (first, last) per batch
    try:
        for lo in range(0, samples, batch):
            if batch < samples:
                last = min(lo + batch, samples)
                say(f"  input {lo + 1} of {samples}" if last == lo + 1 else f"  inputs {lo + 1}-{last} of {samples}")
            losses.append(_optimise(graph, x, start[lo:lo + batch], taps, feeds, steps, say,
                                    batches=0 if lo else -(-samples // batch)))
    except SporelingError as e:  # a layer without a backward rule: judged on random inputs as before
        say(f"  distillation failed, random inputs judge instead: {e}")
        return None
    if not all(np.isfinite(losses).all(axis=1)):
        say("  distillation diverged, random inputs judge instead")
        return None
    first, last = (float(v) for v in np.mean(losses, axis=0))
    say(f"  loss {first:.4f} -> {last:.4f}")
    done = [{**feeds, x: start[i:i + 1].copy()} for i in range(samples)]
    return done, {"batchnorm_layers": len(taps), "samples": samples, "steps": steps, "loss": [first, last]}
