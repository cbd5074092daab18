"""Recurrent layers: LSTM, GRU and RNN (opsets 1 to 22, both layouts, all three directions).

Every layer runs the same way. The input projection X @ W^T + biases does not depend on the hidden
state, so it is computed for all time steps with one GEMM per direction; only the recurrent part
H_{t-1} @ R^T is left inside the loop over time, with gate buffers allocated once per call and
every ufunc writing into them. The hidden state of step t is written straight into the Y output
(layout 0) and read back from there as the next step's state, so no per-step copies are made.

sequence_lens is handled by masking: past a sequence's end its state is frozen and its Y rows are
zero. Running a reverse direction over the padded tail therefore leaves the state at its initial
value until the sequence's last real step, which is where the reverse pass must start.

Sigmoid is evaluated as 0.5 * tanh(x / 2) + 0.5, which never overflows. For the default LSTM
(sigmoid gates, tanh cell, no peepholes or clip) with weights that are constants of the plan, the
1/2 is folded into the i, o, f rows of W, R and the biases once (an exact scaling by a power of
two), so one tanh over all four gates plus a multiply-add on three of them is the whole
activation step. Weights prepared per call (subgraph bodies) skip that: it would cost more than it
saves on the short sequences such bodies usually see.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op

_HALF = np.dtype(np.float16)


# ---- activation functions ----------------------------------------------------------------------
# Each maker takes (alpha, beta) and returns act(x, out) writing act(x) into out (out may be x).
def _sigmoid(_a, _b):
    def act(x, out):
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        out *= 0.5
        out += 0.5

    return act


def _tanh(_a, _b):
    return lambda x, out: np.tanh(x, out=out)


def _relu(_a, _b):
    return lambda x, out: np.maximum(x, 0, out=out)


def _affine(alpha, beta):
    def act(x, out):
        np.multiply(x, alpha, out=out)
        out += beta

    return act


def _leaky_relu(alpha, _b):
    def act(x, out):
        np.multiply(x, np.where(x < 0, alpha, 1.0).astype(x.dtype), out=out)

    return act


def _thresholded_relu(alpha, _b):
    return lambda x, out: np.multiply(x, x > alpha, out=out)


def _scaled_tanh(alpha, beta):
    def act(x, out):
        np.multiply(x, beta, out=out)
        np.tanh(out, out=out)
        out *= alpha

    return act


def _hard_sigmoid(alpha, beta):
    def act(x, out):
        np.multiply(x, alpha, out=out)
        out += beta
        np.clip(out, 0, 1, out=out)

    return act


def _elu(alpha, _b):
    def act(x, out):
        negative = alpha * np.expm1(np.minimum(x, 0))
        np.maximum(x, 0, out=out)
        out += negative

    return act


def _softsign(_a, _b):
    def act(x, out):
        denom = np.abs(x) + 1
        np.divide(x, denom, out=out)

    return act


def _softplus(_a, _b):
    return lambda x, out: np.logaddexp(x, 0, out=out)


# name -> (maker, default alpha or None if it takes none, default beta or None)
_ACTIVATIONS = {
    "sigmoid": (_sigmoid, None, None),
    "tanh": (_tanh, None, None),
    "relu": (_relu, None, None),
    "affine": (_affine, 1.0, 0.0),
    "leakyrelu": (_leaky_relu, 0.01, None),
    "thresholdedrelu": (_thresholded_relu, 1.0, None),
    "scaledtanh": (_scaled_tanh, 1.0, 1.0),
    "hardsigmoid": (_hard_sigmoid, 0.2, 0.5),
    "elu": (_elu, 1.0, None),
    "softsign": (_softsign, None, None),
    "softplus": (_softplus, None, None),
}


def activation_specs(names, alphas, betas, defaults: list[str], num_dir: int) -> list[list[tuple]]:
    """Per direction, each activation as (key, alpha, beta): alpha and beta values are consumed in order by
    the functions that take them (as onnxruntime does). The training runtime's backward reads the same."""
    names = list(names) if names else []
    per_dir = len(defaults)
    if not names:
        names = defaults * num_dir
    elif len(names) == per_dir and num_dir == 2:
        names = names * 2
    if len(names) != per_dir * num_dir:
        raise ValueError(f"expected {per_dir * num_dir} activations, got {len(names)}")
    alphas, betas = list(alphas or []), list(betas or [])
    specs = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise NotImplementedError(f"recurrent activation '{name}' is not supported")
        _, alpha, beta = _ACTIVATIONS[key]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        specs.append((key, alpha, beta))
    return [specs[d * per_dir : (d + 1) * per_dir] for d in range(num_dir)]


def _activations(names, alphas, betas, defaults: list[str], num_dir: int) -> list[list]:
    """Per direction, the bound activation functions, as (key, function)."""
    return [[(key, _ACTIVATIONS[key][0](alpha, beta)) for key, alpha, beta in direction]
            for direction in activation_specs(names, alphas, betas, defaults, num_dir)]


# ---- shapes ------------------------------------------------------------------------------------
def _num_directions(direction: str) -> int:
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"unknown direction '{direction}'")
    return 2 if direction == "bidirectional" else 1


def _make_infer(n_states: int):
    def infer(ins, *, hidden_size=None, direction="forward", layout=0, **_attrs):
        x, r = ins[0], ins[2]
        if x.shape is None:
            return None
        if hidden_size is None:
            if r is None or r.shape is None:
                return None
            hidden_size = r.shape[-1]
        nd = _num_directions(direction)
        seq, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
        y = (batch, seq, nd, hidden_size) if layout else (seq, nd, batch, hidden_size)
        state = (batch, nd, hidden_size) if layout else (nd, batch, hidden_size)
        return [(x.dtype, y)] + [(x.dtype, state)] * n_states

    return infer


# ---- weights -----------------------------------------------------------------------------------
class _Weights:
    """Per-direction operands in the form the loops use: W^T and R^T, the biases that can be folded
    into the input projection summed, and (GRU) the recurrent bias of the candidate gate kept apart
    when it must be applied inside the reset product.

    packed=True (weights that are constant for a plan) stores W^T and R^T as contiguous copies,
    which makes each per-step product a little faster; a per-call preparation (subgraph bodies,
    weights that are computed) uses transposed views instead, since BLAS reads those directly and
    a transposing copy would cost more than it saves on a short sequence."""

    def __init__(self, w, r, b, n_gates: int, calc: np.dtype, halve: int = 0, split_last: bool = False,
                 keep_last_rbias: bool = False, packed: bool = False):
        nd, gh, _ = w.shape
        hidden = gh // n_gates
        self.halved = bool(halve)
        self.wt, self.rt, self.bias, self.rt_split, self.rbias_last = [], [], [], [], []
        # the sigmoid gates' pre-activations are computed halved (exact: a power of two)
        gate_scale = None
        if halve:
            gate_scale = np.ones((gh, 1), calc)
            gate_scale[: halve * hidden] = 0.5
        for d in range(nd):
            wd, rd = w[d].astype(calc, copy=False), r[d].astype(calc, copy=False)
            if gate_scale is not None:
                wd, rd = wd * gate_scale, rd * gate_scale
            wt, rt = wd.T, rd.T
            if packed:
                wt, rt = np.ascontiguousarray(wt), np.ascontiguousarray(rt)
            if b is None:
                wb = np.zeros(gh, calc)
                rb = np.zeros(gh, calc)
            else:
                wb, rb = b[d, :gh].astype(calc), b[d, gh:].astype(calc)
            bias = wb + rb
            if keep_last_rbias:
                bias[(n_gates - 1) * hidden :] = wb[(n_gates - 1) * hidden :]
                self.rbias_last.append(np.ascontiguousarray(rb[(n_gates - 1) * hidden :]))
            if gate_scale is not None:
                bias *= gate_scale[:, 0]
            self.wt.append(wt)
            self.rt.append(rt)
            self.bias.append(bias)
            if split_last:
                cut = (n_gates - 1) * hidden
                parts = rt[:, :cut], rt[:, cut:]
                self.rt_split.append(tuple(np.ascontiguousarray(p) for p in parts) if packed else parts)


def _plan_constant(ins) -> bool:
    """True when make() binds for a plan in which W, R and B are constants while X is not: the
    case worth packing the weights for. (Subgraph bodies and constant folding bind with every
    input known, once per call.)"""
    x, w, r = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    return (x is not None and x.dtype is not None and x.value is None and _const(w) is not None
            and _const(r) is not None and (b is None or _const(b) is not None))


def _const(info):
    return None if info is None else info.value


# ---- the shared driver -------------------------------------------------------------------------
def _unpack_out(out, n: int) -> list:
    if out is None:
        return [None] * n
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    return out + [None] * (n - len(out))


def _run_layer(cell, x, weights: _Weights, sequence_lens, initials: list, *, hidden: int, direction: str,
               layout: int, out):
    """Runs `cell` for each direction and delivers (Y, final states...) in the requested layout.

    cell(d, xp, states, ys, order, masks) runs one direction: xp is the (T, B, G*H) input
    projection, states the (B, H) initial states (owned, may be overwritten), ys the (T, B, H)
    slice of Y to fill, order the time steps. It returns the final states. With layout 0 the
    planned output buffers themselves serve as Y and as the state buffers, so nothing is copied.
    """
    n_states = len(initials)
    outs = _unpack_out(out, 1 + n_states)
    calc = np.dtype(np.float32) if x.dtype == _HALF else x.dtype
    xs = x.swapaxes(0, 1) if layout else x  # (T, B, I)
    steps, batch = xs.shape[0], xs.shape[1]
    nd = _num_directions(direction)
    y_out = outs[0]
    if y_out is not None and not layout and y_out.dtype == calc and y_out.flags.c_contiguous:
        y = y_out
    else:
        y = np.empty((steps, nd, batch, hidden), calc)
    state_shape = (batch, nd, hidden) if layout else (nd, batch, hidden)
    state_outs = [o if o is not None else np.empty(state_shape, x.dtype) for o in outs[1:]]
    # the state of direction d can live in its final output slot while it is updated
    in_place = [not layout and o.dtype == calc and o.flags.c_contiguous for o in state_outs]
    masks = None
    if sequence_lens is not None:
        lens = np.asarray(sequence_lens).reshape(-1)
        if (lens < steps).any():
            masks = (np.arange(steps)[:, None] < lens[None, :])[:, :, None]  # (T, B, 1)
    x2d = np.ascontiguousarray(xs, dtype=calc).reshape(steps * batch, -1)
    for d in range(nd):
        xp = np.matmul(x2d, weights.wt[d])
        xp += weights.bias[d]
        xp = xp.reshape(steps, batch, -1)
        states = []
        for init, slot, own in zip(initials, state_outs, in_place):
            buf = slot[d] if own else np.empty((batch, hidden), calc)
            if init is None:
                buf.fill(0)
            else:
                np.copyto(buf, init[:, d] if layout else init[d], casting="unsafe")
            states.append(buf)
        reverse = direction == "reverse" or d == 1
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        finals = cell(d, xp, states, y[:, d], order, masks)
        for final, buf, slot, own in zip(finals, states, state_outs, in_place):
            if not (own and final is buf):
                np.copyto(slot[:, d] if layout else slot[d], final, casting="unsafe")
    if y_out is None:
        y_out = np.ascontiguousarray(y.transpose(2, 0, 1, 3) if layout else y, dtype=x.dtype)
    elif y_out is not y:
        np.copyto(y_out, y.transpose(2, 0, 1, 3) if layout else y, casting="unsafe")
    if out is not None:
        return out
    return (y_out, *state_outs)


def _finish_step(states_next, states, ys_t, mask):
    """Masked step end: rows past their sequence keep the old state and get a zero output."""
    for nxt, cur in zip(states_next, states):
        np.copyto(cur, nxt, where=mask)
    np.multiply(states_next[0], mask, out=ys_t)


# ---- LSTM --------------------------------------------------------------------------------------
def _make_lstm(ins, *, hidden_size=None, direction="forward", layout=0, activations=None, activation_alpha=None,
               activation_beta=None, clip=None, input_forget=0, output_sequence=0):
    nd = _num_directions(direction)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"], nd)
    default = all([a[0] for a in acts[d]] == ["sigmoid", "tanh", "tanh"] for d in range(nd))
    # the halved-gate form needs the default activations and no clip, gate coupling or peepholes
    fast_possible = default and clip is None and not input_forget
    p_info = ins[7] if len(ins) > 7 else None
    fixed = None
    if _plan_constant(ins):
        calc = np.dtype(np.float32) if ins[0].dtype == _HALF else np.dtype(ins[0].dtype)
        halve = 3 if fast_possible and p_info is None else 0
        fixed = _Weights(ins[1].value, ins[2].value, _const(ins[3] if len(ins) > 3 else None), 4, calc, halve,
                         packed=True)

    def lstm_bound(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, out=None):
        calc = np.dtype(np.float32) if x.dtype == _HALF else x.dtype
        # the halved-gate form only pays when the weights are prepared once for many calls
        if fixed is not None and fixed.halved == (fast_possible and p is None):
            weights = fixed
        else:
            weights = _Weights(w, r, b, 4, calc)
        fast = weights.halved
        hidden = r.shape[-1]
        peep = None if p is None else p.astype(calc).reshape(nd, 3, hidden)

        def cell(d, xp, states, ys, order, masks):
            return _lstm_direction(xp, weights.rt[d], None if peep is None else peep[d], states, ys, order, masks,
                                   acts[d], clip, input_forget, fast)

        return _run_layer(cell, x, weights, sequence_lens, [initial_h, initial_c], hidden=hidden,
                          direction=direction, layout=layout, out=out)

    return lstm_bound


def _lstm_direction(xp, rt, peep, states, ys, order, masks, acts, clip, input_forget, fast):
    h, c = states
    batch, hidden = h.shape
    gates = np.empty((batch, 4 * hidden), h.dtype)
    tmp = np.empty((batch, hidden), h.dtype)
    i, o, f, g = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
    iof = gates[:, : 3 * hidden]
    (_, f_act), (_, g_act), (_, h_act) = acts
    if masks is not None:
        h_next, c_next = np.empty_like(h), np.empty_like(c)
    for t in order:
        np.matmul(h, rt, out=gates)
        gates += xp[t]
        if masks is None:
            h_next, c_next = ys[t], c
        if fast:
            np.tanh(gates, out=gates)
            iof *= 0.5
            iof += 0.5
        else:
            if peep is not None:
                np.multiply(peep[0], c, out=tmp)
                i += tmp
                np.multiply(peep[2], c, out=tmp)
                f += tmp
            if clip is not None and peep is None:
                np.clip(gates, -clip, clip, out=gates)
            elif clip is not None:  # o is clipped once its peephole term (on the new C) is in
                np.clip(i, -clip, clip, out=i)
                np.clip(gates[:, 2 * hidden :], -clip, clip, out=gates[:, 2 * hidden :])
            if peep is None:
                f_act(iof, iof)
            else:
                f_act(i, i)
                f_act(f, f)
            g_act(g, g)
            if input_forget:
                np.subtract(1, i, out=f)
        np.multiply(i, g, out=tmp)
        np.multiply(f, c, out=c_next)
        c_next += tmp
        if peep is not None:
            np.multiply(peep[1], c_next, out=tmp)
            o += tmp
            if clip is not None:
                np.clip(o, -clip, clip, out=o)
            f_act(o, o)
        h_act(c_next, tmp)
        np.multiply(o, tmp, out=h_next)
        if masks is None:
            h = h_next
        else:
            _finish_step((h_next, c_next), (h, c), ys[t], masks[t])
    return h, c


def _lstm(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, hidden_size=None,
          direction="forward", layout=0, activations=None, activation_alpha=None, activation_beta=None, clip=None,
          input_forget=0, output_sequence=0, out=None):
    bound = _make_lstm([None] * 8, hidden_size=hidden_size, direction=direction, layout=layout,
                       activations=activations, activation_alpha=activation_alpha, activation_beta=activation_beta,
                       clip=clip, input_forget=input_forget)
    return bound(x, w, r, b, sequence_lens, initial_h, initial_c, p, out=out)


register_op("LSTM", since=1, infer=_make_infer(2), out=True, make=_make_lstm)(_lstm)


# ---- GRU ---------------------------------------------------------------------------------------
def _make_gru(ins, *, hidden_size=None, direction="forward", layout=0, activations=None, activation_alpha=None,
              activation_beta=None, clip=None, linear_before_reset=0, output_sequence=0):
    nd = _num_directions(direction)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"], nd)
    lbr = bool(linear_before_reset)
    fixed = None

    def weights_of(w, r, b, calc, packed=False):
        return _Weights(w, r, b, 3, calc, split_last=not lbr, keep_last_rbias=lbr, packed=packed)

    if _plan_constant(ins):
        calc = np.dtype(np.float32) if ins[0].dtype == _HALF else np.dtype(ins[0].dtype)
        fixed = weights_of(ins[1].value, ins[2].value, _const(ins[3] if len(ins) > 3 else None), calc, packed=True)

    def gru_bound(x, w, r, b=None, sequence_lens=None, initial_h=None, *, out=None):
        calc = np.dtype(np.float32) if x.dtype == _HALF else x.dtype
        weights = fixed or weights_of(w, r, b, calc)
        hidden = r.shape[-1]

        def cell(d, xp, states, ys, order, masks):
            return _gru_direction(xp, weights, d, states, ys, order, masks, acts[d], clip, lbr)

        return _run_layer(cell, x, weights, sequence_lens, [initial_h], hidden=hidden, direction=direction,
                          layout=layout, out=out)

    return gru_bound


def _gru_direction(xp, weights, d, states, ys, order, masks, acts, clip, lbr):
    (h,) = states
    batch, hidden = h.shape
    (_, f_act), (_, g_act) = acts
    zr = np.empty((batch, 2 * hidden), h.dtype)
    cand = np.empty((batch, hidden), h.dtype)
    tmp = np.empty((batch, hidden), h.dtype)
    z, r = zr[:, :hidden], zr[:, hidden:]
    if lbr:
        rt_all, rbias = weights.rt[d], weights.rbias_last[d]
        rec = np.empty((batch, 3 * hidden), h.dtype)
        rec_zr, rec_h = rec[:, : 2 * hidden], rec[:, 2 * hidden :]
    else:
        rt_zr, rt_h = weights.rt_split[d]
    h_next = np.empty_like(h) if masks is not None else None
    for t in order:
        xt = xp[t]
        if lbr:
            np.matmul(h, rt_all, out=rec)
            np.add(rec_zr, xt[:, : 2 * hidden], out=zr)
        else:
            np.matmul(h, rt_zr, out=zr)
            zr += xt[:, : 2 * hidden]
        if clip is not None:
            np.clip(zr, -clip, clip, out=zr)
        f_act(zr, zr)
        if lbr:
            rec_h += rbias
            np.multiply(r, rec_h, out=cand)
        else:
            np.multiply(r, h, out=tmp)
            np.matmul(tmp, rt_h, out=cand)
        cand += xt[:, 2 * hidden :]
        if clip is not None:
            np.clip(cand, -clip, clip, out=cand)
        g_act(cand, cand)
        # H_t = (1 - z) * cand + z * H_{t-1} = cand + z * (H_{t-1} - cand)
        np.subtract(h, cand, out=tmp)
        tmp *= z
        if masks is None:
            np.add(cand, tmp, out=ys[t])
            h = ys[t]
        else:
            np.add(cand, tmp, out=h_next)
            _finish_step((h_next,), (h,), ys[t], masks[t])
    return (h,)


def _gru(x, w, r, b=None, sequence_lens=None, initial_h=None, *, hidden_size=None, direction="forward", layout=0,
         activations=None, activation_alpha=None, activation_beta=None, clip=None, linear_before_reset=0,
         output_sequence=0, out=None):
    bound = _make_gru([None] * 6, hidden_size=hidden_size, direction=direction, layout=layout,
                      activations=activations, activation_alpha=activation_alpha, activation_beta=activation_beta,
                      clip=clip, linear_before_reset=linear_before_reset)
    return bound(x, w, r, b, sequence_lens, initial_h, out=out)


register_op("GRU", since=1, infer=_make_infer(1), out=True, make=_make_gru)(_gru)


# ---- RNN ---------------------------------------------------------------------------------------
def _make_simple_rnn(ins, *, hidden_size=None, direction="forward", layout=0, activations=None,
                     activation_alpha=None, activation_beta=None, clip=None, output_sequence=0):
    nd = _num_directions(direction)
    acts = _activations(activations, activation_alpha, activation_beta, ["Tanh"], nd)
    fixed = None
    if _plan_constant(ins):
        calc = np.dtype(np.float32) if ins[0].dtype == _HALF else np.dtype(ins[0].dtype)
        fixed = _Weights(ins[1].value, ins[2].value, _const(ins[3] if len(ins) > 3 else None), 1, calc, packed=True)

    def rnn_bound(x, w, r, b=None, sequence_lens=None, initial_h=None, *, out=None):
        calc = np.dtype(np.float32) if x.dtype == _HALF else x.dtype
        weights = fixed or _Weights(w, r, b, 1, calc)
        hidden = r.shape[-1]

        def cell(d, xp, states, ys, order, masks):
            return _rnn_direction(xp, weights.rt[d], states, ys, order, masks, acts[d][0][1], clip)

        return _run_layer(cell, x, weights, sequence_lens, [initial_h], hidden=hidden, direction=direction,
                          layout=layout, out=out)

    return rnn_bound


def _rnn_direction(xp, rt, states, ys, order, masks, act, clip):
    (h,) = states
    h_next = np.empty_like(h) if masks is not None else None
    for t in order:
        target = ys[t] if masks is None else h_next
        np.matmul(h, rt, out=target)
        target += xp[t]
        if clip is not None:
            np.clip(target, -clip, clip, out=target)
        act(target, target)
        if masks is None:
            h = target
        else:
            _finish_step((h_next,), (h,), ys[t], masks[t])
    return (h,)


def _simple_rnn(x, w, r, b=None, sequence_lens=None, initial_h=None, *, hidden_size=None, direction="forward",
                layout=0, activations=None, activation_alpha=None, activation_beta=None, clip=None,
                output_sequence=0, out=None):
    bound = _make_simple_rnn([None] * 6, hidden_size=hidden_size, direction=direction, layout=layout,
                             activations=activations, activation_alpha=activation_alpha,
                             activation_beta=activation_beta, clip=clip)
    return bound(x, w, r, b, sequence_lens, initial_h, out=out)


register_op("RNN", since=1, infer=_make_infer(1), out=True, make=_make_simple_rnn)(_simple_rnn)
