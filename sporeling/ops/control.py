"""Control flow: If, Loop and Scan.

These kernels are registered with ``context=True``: they receive ``ctx``, which holds the enclosing
scope's values that their bodies read, and ``ctx.run(body, inputs)`` executes a body graph. Values
flowing through them may be tensors, sequences (lists) or optionals (None), so none of them has an
infer function: the session treats their outputs as produced at run time. The session only folds a
control-flow node at prepare time when its inputs and every outer name its bodies read are
constants, so a branch that reads a feed is never frozen.

A body output that is one of the body's own initializers is copied on the way out: the caller may
hand it to the user, who must not be able to modify the model's constants through it.

Loop and Scan run their body once per iteration through the context's interpreter; per-iteration
scan values are collected in lists and stacked once at the end.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..runtime.context import as_bool
from .registry import register_op


def _detach(body: Graph, values: list) -> list:
    """Body results as the node's outputs: copies of body constants, and 0-d arrays in place of the
    NumPy scalars that ufuncs return for 0-d operands."""
    consts = {id(a) for a in body.initializers.values()}
    out = []
    for v in values:
        if isinstance(v, np.generic):
            v = np.asarray(v)
        elif isinstance(v, np.ndarray) and id(v) in consts:
            v = v.copy()
        out.append(v)
    return out


def _results(values: list):
    return values[0] if len(values) == 1 else tuple(values)


def _empty_scan_output(body: Graph, index: int) -> np.ndarray:
    """A scan output of zero iterations: shape (0, *element shape) when the body declares a static
    element shape, else (0,); the body's declared dtype, else float32."""
    vi = body.outputs[index]
    dtype = vi.dtype if vi.dtype is not None else np.dtype(np.float32)
    shape = vi.shape if vi.shape is not None and all(isinstance(d, int) and d >= 0 for d in vi.shape) else ()
    return np.empty((0, *shape), dtype)


# ---- If ----------------------------------------------------------------------------------------


@register_op("If", since=1, context=True)
def if_op(cond, *, then_branch: Graph, else_branch: Graph, ctx):
    branch = then_branch if as_bool(cond) else else_branch
    return _results(_detach(branch, ctx.run(branch, [])))


# ---- Loop --------------------------------------------------------------------------------------


@register_op("Loop", since=1, context=True)
def loop(trip_count=None, cond=None, *carried_initial, body: Graph, ctx):
    """Runs body while the iteration count is below M (when given) and cond holds (when given).
    Body signature: (iteration_num, cond_in, carried...) -> (cond_out, carried..., scan_elems...)."""
    n_carried = len(carried_initial)
    n_scan = len(body.outputs) - 1 - n_carried
    limit = None if trip_count is None else int(np.asarray(trip_count).reshape(-1)[0])
    keep_going = True if cond is None else as_bool(cond)
    carried = list(carried_initial)
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    while keep_going and (limit is None or i < limit):
        outs = ctx.run(body, [np.array(i, np.int64), np.array(keep_going), *carried])
        keep_going = as_bool(outs[0])
        carried = outs[1 : 1 + n_carried]
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        i += 1
    stacked = [
        np.stack(s) if s else _empty_scan_output(body, 1 + n_carried + k) for k, s in enumerate(scans)
    ]
    return _results(_detach(body, carried + stacked))


# ---- Scan --------------------------------------------------------------------------------------


def _run_scan(body, ctx, states, scan_inputs, in_axes, in_dirs, length):
    """One scan over `length` steps; scan inputs are sliced along in_axes (reversed per in_dirs).
    Returns the final states and, per scan output, the list of per-step values in step order."""
    n_states = len(states)
    n_out = len(body.outputs) - n_states
    per_step: list[list] = [[] for _ in range(n_out)]
    states = list(states)
    for t in range(length):
        elems = [
            np.take(x, length - 1 - t if d else t, axis=ax) for x, ax, d in zip(scan_inputs, in_axes, in_dirs)
        ]
        outs = ctx.run(body, states + elems)
        states = outs[:n_states]
        for k in range(n_out):
            per_step[k].append(outs[n_states + k])
    return states, per_step


@register_op("Scan", since=9, context=True)
def scan(*inputs, body: Graph, num_scan_inputs: int, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None, ctx):
    n_states = len(inputs) - num_scan_inputs
    states, scan_inputs = list(inputs[:n_states]), list(inputs[n_states:])
    in_axes = [a + x.ndim if a < 0 else a for a, x in zip(scan_input_axes or [0] * num_scan_inputs, scan_inputs)]
    in_dirs = scan_input_directions or [0] * num_scan_inputs
    lengths = {x.shape[a] for x, a in zip(scan_inputs, in_axes)}
    if len(lengths) > 1:
        raise ValueError(f"Scan: scan inputs have different sequence lengths {sorted(lengths)}")
    length = lengths.pop() if lengths else 0
    states, per_step = _run_scan(body, ctx, states, scan_inputs, in_axes, in_dirs, length)
    n_out = len(per_step)
    out_axes = scan_output_axes or [0] * n_out
    out_dirs = scan_output_directions or [0] * n_out
    outputs = []
    for k, values in enumerate(per_step):
        if not values:
            outputs.append(_empty_scan_output(body, n_states + k))
            continue
        if out_dirs[k]:
            values = values[::-1]  # reverse output: the first step's value goes last
        rank = values[0].ndim + 1
        axis = out_axes[k] + rank if out_axes[k] < 0 else out_axes[k]
        outputs.append(np.stack(values, axis=axis))
    return _results(_detach(body, states + outputs))


@register_op("Scan", since=8, context=True)
def scan_v8(sequence_lens, *inputs, body: Graph, num_scan_inputs: int, directions=None, ctx):
    """Opset-8 Scan: every input has a batch axis 0 and scan inputs a sequence axis 1. Each batch
    entry is scanned separately (up to its sequence_lens); shorter scan outputs are zero-padded."""
    n_states = len(inputs) - num_scan_inputs
    states, scan_inputs = inputs[:n_states], inputs[n_states:]
    dirs = directions or [0] * num_scan_inputs
    batch = (scan_inputs[0] if scan_inputs else states[0]).shape[0]
    max_len = scan_inputs[0].shape[1] if scan_inputs else 0
    lens = [max_len] * batch if sequence_lens is None else [int(v) for v in np.asarray(sequence_lens).reshape(-1)]
    final_states: list[list] = [[] for _ in range(n_states)]
    n_out = len(body.outputs) - n_states
    scan_outs: list[list] = [[] for _ in range(n_out)]
    for b in range(batch):
        seq = [x[b, : lens[b]] for x in scan_inputs]
        st, per_step = _run_scan(body, ctx, [s[b] for s in states], seq, [0] * len(seq), dirs, lens[b])
        for k in range(n_states):
            final_states[k].append(st[k])
        for k in range(n_out):
            scan_outs[k].append(per_step[k])
    outputs = [np.stack(s) for s in final_states]
    for k in range(n_out):
        rows = scan_outs[k]
        example = next((r[0] for r in rows if r), None)
        if example is None:  # no batch entry ran a step: the element shape comes from the body
            empty = _empty_scan_output(body, n_states + k)
            outputs.append(np.zeros((batch, max_len, *empty.shape[1:]), empty.dtype))
            continue
        full = np.zeros((batch, max_len, *example.shape), example.dtype)
        for b, r in enumerate(rows):
            if r:
                full[b, : len(r)] = np.stack(r)
        outputs.append(full)
    return _results(_detach(body, outputs))
