"""Backward rules for the recurrent layers LSTM, GRU and RNN: backpropagation through time.

The forward kernels (sporeling/ops/rnn.py) output Y and the final states but not the gates, so each rule
recomputes the gates from the saved inputs. It takes the hidden state entering every step from Y (the state
after step t-1 is Y's row t-1; on padded rows it is the initial state, the only value a later real step can
read there), so the recompute needs no recursion through H: one GEMM over all steps gives every gate's
recurrent term, and the activations run once over all steps. Only LSTM's cell state is a recursion, two
multiply-adds per step (more with peepholes, whose gates read C). Where Y is absent, or in another dtype
than the computation (float16 values, say), the forward kernel is run again for it.

The backward pass walks the steps in reverse with one (B, G*H) x (G*H, H) product per step and direction
(GRU with linear_before_reset=0 needs two: its candidate reads r * H_{t-1} through R_h). Each step's local
derivatives are folded beforehand, over all steps at once, into factors so that a step is a handful of
multiplies; the gradients of X, W, R and the biases are one GEMM each over all steps.

ONNX semantics follow the kernel: gate orders iofc (LSTM) and zrh (GRU); a reverse direction is a forward one
over time flipped, done here by flipping the input projection, the masks, Y and Y's gradient; with
sequence_lens a padded step keeps the state (its gradient passes through unchanged) and its Y row is a zero
constant (its gradient is dropped). clip bounds the gate pre-activations (derivative 1 inside [-clip, clip],
0 outside); LSTM peepholes add P_i*C_{t-1}, P_f*C_{t-1} and P_o*C_t before clip; input_forget sets
f = 1 - i. sequence_lens gets no gradient. float16 inputs are computed in float32. The rules read all
inputs and output Y (index 0), which the training runtime must therefore keep for them.
"""

from __future__ import annotations

import numpy as np

from ..ops import lookup
from ..ops.rnn import _ACTIVATIONS, activation_specs
from .vjp import VJPContext, as_gradient, register_vjp, wanted


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


# ---- activations: the kernel's forward functions and their derivatives dy/dx(x, y) ------------------------
_DERIVATIVES = {
    "sigmoid": lambda x, y, a, b: y * (1 - y),
    "tanh": lambda x, y, a, b: 1 - y * y,
    "relu": lambda x, y, a, b: x > 0,
    "affine": lambda x, y, a, b: np.full_like(x, a),
    "leakyrelu": lambda x, y, a, b: np.where(x < 0, a, 1.0),
    "thresholdedrelu": lambda x, y, a, b: x > a,
    "scaledtanh": lambda x, y, a, b: a * b * (1 - np.tanh(b * x) ** 2),
    "hardsigmoid": lambda x, y, a, b: a * ((a * x + b > 0) & (a * x + b < 1)),
    "elu": lambda x, y, a, b: np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0))),
    "softsign": lambda x, y, a, b: 1 / (1 + np.abs(x)) ** 2,
    "softplus": lambda x, y, a, b: 0.5 * np.tanh(0.5 * x) + 0.5,
}


class _Act:
    """One bound activation: fwd(x, out) exactly as the kernel computes it, der(x, y) its derivative."""

    def __init__(self, key: str, alpha, beta):
        self.fwd = _ACTIVATIONS[key][0](alpha, beta)
        self._der, self._a, self._b = _DERIVATIVES[key], alpha, beta

    def der(self, x, y):
        return np.asarray(self._der(x, y, self._a, self._b), dtype=x.dtype)


def _activations(attrs, defaults: list[str], nd: int) -> list[list[_Act]]:
    """Per direction, the bound activations, with alpha and beta given out as ops.rnn binds them for the
    forward (activation_specs)."""
    names = [_text(n) for n in attrs.get("activations") or []]
    specs = activation_specs(names, attrs.get("activation_alpha"), attrs.get("activation_beta"), defaults, nd)
    return [[_Act(key, alpha, beta) for key, alpha, beta in direction] for direction in specs]


def _activate(pre, act: _Act, clip, out):
    """out = act(clip(pre)); returns out."""
    if clip is None:
        act.fwd(pre, out)
    else:
        act.fwd(np.clip(pre, -clip, clip, out=out), out)
    return out


def _derivative(pre, post, act: _Act, clip):
    """act'(clip(pre)) * clip'(pre), over any block of steps."""
    d = act.der(pre if clip is None else np.clip(pre, -clip, clip), post)
    if clip is not None:
        d *= np.abs(pre) <= clip
    return d


# ---- the shared driver ----------------------------------------------------------------------------------
def _input(ctx: VJPContext, i: int):
    return ctx.inputs[i] if i < len(ctx.inputs) else None


def _output_grad(ctx: VJPContext, i: int):
    return ctx.grads[i] if i < len(ctx.grads) else None


def _forward_y(ctx: VJPContext, calc) -> np.ndarray:
    """The node's Y in the computation dtype: the saved output, or the kernel run again. (An output the
    training runtime did not keep reaches a rule as a zero-stride stand-in, which counts as absent.)"""
    y = ctx.outputs[0] if ctx.outputs else None
    if y is not None and y.dtype == calc and (y.size <= 1 or any(y.strides)):
        return y
    ins = [x if x is None or i == 4 else x.astype(calc) for i, x in enumerate(ctx.inputs)]
    return lookup(ctx.op_type, ctx.opset).kernel(*ins, **ctx.attrs)[0]


def _layer_vjp(ctx: VJPContext, n_gates: int, n_states: int, defaults: list[str], direction_vjp):
    """Flips, layouts and the non-recurrent GEMMs shared by the three layers.

    direction_vjp(d, xp, rd, rb, hprev, inits, masks, gy, gfinal, acts) handles direction d in processing
    order: xp is the (T, B, G*H) input projection with W's bias added (the cell adds R's bias where the op
    puts it), rd R[d], hprev the (T, B, H) states entering each step, inits/gfinal the (B, H) initial states
    and final-state gradients, masks (T, B, 1) 0/1 or None, gy (T, B, H) Y's gradient or None. It returns
    (dxp, dR, dRb, d_inits, extra), dxp the gradient of xp.
    """
    x, w, r = ctx.inputs[:3]
    b, lens = _input(ctx, 3), _input(ctx, 4)
    direction = _text(ctx.attrs.get("direction", "forward"))
    layout = int(ctx.attrs.get("layout", 0))
    nd = 2 if direction == "bidirectional" else 1
    acts = _activations(ctx.attrs, defaults, nd)
    calc = np.promote_types(x.dtype, np.float32)

    def time_major(a):  # X and Y to (T, ...), states to (nd, B, H), in the computation dtype
        return None if a is None else np.asarray(a.swapaxes(0, 1) if layout else a, dtype=calc)

    xs = time_major(x)
    steps, batch = xs.shape[:2]
    hidden = r.shape[-1]
    gh = n_gates * hidden
    masks = None
    if lens is not None and (np.asarray(lens).reshape(-1) < steps).any():
        masks = (np.arange(steps)[:, None] < np.asarray(lens).reshape(1, -1))[:, :, None].astype(calc)
    y = _forward_y(ctx, calc)
    y = y.transpose(1, 2, 0, 3) if layout else y  # (T, nd, B, H)
    gy = _output_grad(ctx, 0)
    gy = None if gy is None else np.asarray(gy.transpose(1, 2, 0, 3) if layout else gy, dtype=calc)
    gfinal = [time_major(_output_grad(ctx, 1 + k)) for k in range(n_states)]
    inits = [time_major(_input(ctx, 5 + k)) for k in range(n_states)]
    gx = np.zeros(xs.shape, calc) if wanted(ctx, 0) else None
    gw, gr = np.empty(w.shape, calc), np.empty(r.shape, calc)
    gb = np.empty((nd, 2 * gh), calc)
    ginits = [np.empty((nd, batch, hidden), calc) for _ in range(n_states)]
    extras = []
    for d in range(nd):
        flip = slice(None, None, -1) if direction == "reverse" or d == 1 else slice(None)
        wd, rd = w[d].astype(calc, copy=False), r[d].astype(calc, copy=False)
        wb = np.zeros(gh, calc) if b is None else b[d, :gh].astype(calc)
        rb = np.zeros(gh, calc) if b is None else b[d, gh:].astype(calc)
        x2d = xs[flip].reshape(steps * batch, -1)  # in processing order, as everything below
        xp = np.matmul(x2d, wd.T).reshape(steps, batch, gh)
        xp += wb
        states = [np.zeros((batch, hidden), calc) if s is None else s[d] for s in inits]
        m = None if masks is None else masks[flip]
        hprev = np.empty((steps, batch, hidden), calc)
        hprev[0] = states[0]
        yd = y[flip, d]
        if m is None:
            hprev[1:] = yd[:-1]
        else:  # a padded row still holds the initial state, or is never read (past the sequence's end)
            np.copyto(hprev[1:], np.where(m[:-1] > 0, yd[:-1], states[0]))
        dxp, gr[d], gb[d, gh:], d_inits, extra = direction_vjp(
            d, xp, rd, rb, hprev, states, m, None if gy is None else gy[flip, d],
            [None if g is None else g[d] for g in gfinal], acts[d])
        dxp = dxp.reshape(-1, gh)
        if gx is not None:
            gx += (dxp @ wd).reshape(xs.shape)[flip]
        if wanted(ctx, 1):
            gw[d] = dxp.T @ x2d
        gb[d, :gh] = dxp.sum(axis=0)
        for k in range(n_states):
            ginits[k][d] = d_inits[k]
        extras.append(extra)
    res: list = [None] * len(ctx.inputs)
    if gx is not None:
        res[0] = as_gradient(gx.swapaxes(0, 1) if layout else gx, x)
    for i, g in ((1, gw), (2, gr), (3, gb)):
        if wanted(ctx, i):
            res[i] = as_gradient(g, ctx.inputs[i])
    for k in range(n_states):
        if wanted(ctx, 5 + k):
            res[5 + k] = as_gradient(ginits[k].swapaxes(0, 1) if layout else ginits[k], ctx.inputs[5 + k])
    return res, extras


def _start(gfinal, like):
    """The gradient reaching the state after the last step: the final output's, or zero."""
    return np.zeros_like(like) if gfinal is None else gfinal.copy()


def _step_grad(dh, gy, masks, s):
    """Gradient of step s's new state: what reaches the state and Y; zero on padded rows."""
    g = dh + gy[s] if gy is not None else dh.copy()
    if masks is not None:
        g *= masks[s]
    return g


def _carry(d_prev, d_next, masks, s):
    """A padded row's state is the previous one unchanged, so its gradient passes straight through."""
    if masks is not None:
        d_prev += (1 - masks[s]) * d_next
    return d_prev


def _recurrent(hprev, rt):
    """H_{t-1} @ R^T for all steps in one GEMM: (T, B, H) x (H, G) -> (T, B, G)."""
    steps, batch, hid = hprev.shape
    return np.matmul(hprev.reshape(-1, hid), rt).reshape(steps, batch, -1)


# ---- LSTM ------------------------------------------------------------------------------------------------
def _lstm_direction(xp, rd, rb, hprev, states, masks, gy, gfinal, acts, *, p, clip, input_forget):
    steps, batch, gh = xp.shape
    hid = gh // 4
    i_, o_, f_, g_ = (slice(k * hid, (k + 1) * hid) for k in range(4))
    fa, ga, ha = acts
    pre = _recurrent(hprev, rd.T)  # gate pre-activations before clip
    pre += xp
    pre += rb
    post = np.empty_like(pre)
    i, o, f, g = (post[..., sl] for sl in (i_, o_, f_, g_))
    _activate(pre[..., g_], ga, clip, g)
    if p is None:  # no gate reads C: all of them at once
        _activate(pre[..., : 3 * hid], fa, clip, post[..., : 3 * hid])
        if input_forget:
            np.subtract(1, i, out=f)
        ig = i * g
    cs = np.empty((steps + 1, batch, hid), xp.dtype)  # C entering each step, then the final one
    cs[0] = states[1]
    cn = cs[1:] if masks is None else np.empty((steps, batch, hid), xp.dtype)  # each step's new C
    for s in range(steps):
        c = cs[s]
        if p is not None:
            pre[s, :, i_] += p[0] * c
            pre[s, :, f_] += p[2] * c
            _activate(pre[s, :, i_], fa, clip, i[s])
            _activate(pre[s, :, f_], fa, clip, f[s])
            if input_forget:
                np.subtract(1, i[s], out=f[s])
            np.multiply(i[s], g[s], out=cn[s])
        else:
            np.copyto(cn[s], ig[s])
        cn[s] += f[s] * c
        if p is not None:  # o reads the new C
            pre[s, :, o_] += p[1] * cn[s]
            _activate(pre[s, :, o_], fa, clip, o[s])
        if masks is not None:
            np.copyto(cs[s + 1], np.where(masks[s] > 0, cn[s], c))
    hc = np.empty_like(cn)
    ha.fwd(cn, hc)
    # the factors: dA_o = dHn * k_o, dCn = dHn * kc + dC, dA_{i,f,g} = dCn * k_{i,f,g}
    k = np.empty_like(pre)
    k[..., : 3 * hid] = _derivative(pre[..., : 3 * hid], post[..., : 3 * hid], fa, clip)
    k[..., g_] = _derivative(pre[..., g_], g, ga, clip)
    k[..., o_] *= hc
    k[..., g_] *= i
    c_prev = cs[:-1]
    if input_forget:  # f = 1 - i: f's gradient goes to i, none to f's own pre-activation
        k[..., i_] *= g - c_prev
        k[..., f_] = 0
    else:
        k[..., i_] *= g
        k[..., f_] *= c_prev
    kc = ha.der(cn, hc)
    kc *= o
    dxp = np.empty_like(xp)
    dh, dc = _start(gfinal[0], states[0]), _start(gfinal[1], states[1])
    for s in range(steps - 1, -1, -1):
        dhn = _step_grad(dh, gy, masks, s)
        da, ks = dxp[s], k[s]
        np.multiply(dhn, ks[:, o_], out=da[:, o_])
        dcn = dhn * kc[s]
        dcn += dc if masks is None else dc * masks[s]
        if p is not None:
            dcn += da[:, o_] * p[1]
        np.multiply(dcn, ks[:, i_], out=da[:, i_])
        np.multiply(dcn, ks[:, f_], out=da[:, f_])
        np.multiply(dcn, ks[:, g_], out=da[:, g_])
        dc_prev = dcn * f[s]
        if p is not None:
            dc_prev += da[:, i_] * p[0] + da[:, f_] * p[2]
        dh, dc = _carry(da @ rd, dh, masks, s), _carry(dc_prev, dc, masks, s)
    flat = dxp.reshape(-1, gh)
    dr = flat.T @ hprev.reshape(-1, hid)
    dp = None
    if p is not None:
        dp = np.concatenate([np.einsum("tbh,tbh->h", dxp[..., i_], c_prev), np.einsum("tbh,tbh->h", dxp[..., o_], cn),
                             np.einsum("tbh,tbh->h", dxp[..., f_], c_prev)])
    return dxp, dr, flat.sum(axis=0), (dh, dc), dp


@register_vjp("LSTM")
def lstm_vjp(ctx: VJPContext) -> list:
    peep = _input(ctx, 7)
    hidden = ctx.inputs[2].shape[-1]
    calc = np.promote_types(ctx.inputs[0].dtype, np.float32)
    p = None if peep is None else peep.astype(calc).reshape(-1, 3, hidden)
    clip, input_forget = ctx.attrs.get("clip"), bool(ctx.attrs.get("input_forget", 0))

    def direction(d, xp, rd, rb, hprev, states, masks, gy, gfinal, acts):
        return _lstm_direction(xp, rd, rb, hprev, states, masks, gy, gfinal, acts, p=None if p is None else p[d],
                               clip=clip, input_forget=input_forget)

    res, dps = _layer_vjp(ctx, 4, 2, ["Sigmoid", "Tanh", "Tanh"], direction)
    if peep is not None and wanted(ctx, 7):
        res[7] = as_gradient(np.stack(dps), peep)
    return res


# ---- GRU -------------------------------------------------------------------------------------------------
def _gru_direction(xp, rd, rb, hprev, states, masks, gy, gfinal, acts, *, clip, lbr):
    steps, batch, gh = xp.shape
    hid = gh // 3
    zr_, h_ = slice(0, 2 * hid), slice(2 * hid, gh)
    fa, ga = acts
    rt = rd.T
    pre, post = np.empty_like(xp), np.empty_like(xp)  # pre-activations (before clip); z, r, candidate
    z, r, cand = post[..., :hid], post[..., hid : 2 * hid], post[..., h_]
    if lbr:  # the candidate's recurrent bias stays inside the reset product
        rec = _recurrent(hprev, rt)
        rec += rb
        np.add(rec[..., zr_], xp[..., zr_], out=pre[..., zr_])
        rec_h = rec[..., h_]  # H_{t-1} @ R_h^T + Rb_h, the term r multiplies
        _activate(pre[..., zr_], fa, clip, post[..., zr_])
        np.multiply(r, rec_h, out=pre[..., h_])
    else:
        np.add(_recurrent(hprev, rt[:, zr_]), xp[..., zr_], out=pre[..., zr_])
        pre[..., zr_] += rb[zr_]
        _activate(pre[..., zr_], fa, clip, post[..., zr_])
        pre[..., h_] = _recurrent(r * hprev, rt[:, h_])
        pre[..., h_] += rb[h_]
    pre[..., h_] += xp[..., h_]
    _activate(pre[..., h_], ga, clip, cand)
    # H_t = cand + z * (H_{t-1} - cand); the factors of dA_z, dA_h and dA_r per unit of dH_t
    k = np.empty_like(pre)
    k[..., zr_] = _derivative(pre[..., zr_], post[..., zr_], fa, clip)
    k[..., h_] = _derivative(pre[..., h_], cand, ga, clip)
    k[..., :hid] *= hprev - cand
    k[..., h_] *= 1 - z
    dh = _start(gfinal[0], states[0])
    if lbr:
        k[..., hid : 2 * hid] *= k[..., h_] * rec_h
        krec = k.copy()  # the gradient of H_{t-1} @ R^T + Rb: the h block is dA_h * r
        krec[..., h_] *= r
        dhn_all = np.empty_like(hprev)
        drec = np.empty_like(xp)
        for s in range(steps - 1, -1, -1):
            dhn = dhn_all[s] = _step_grad(dh, gy, masks, s)
            np.multiply(dhn[:, None, :], krec[s].reshape(batch, 3, hid), out=drec[s].reshape(batch, 3, hid))
            dh = _carry(drec[s] @ rd + dhn * z[s], dh, masks, s)
        dxp = (dhn_all[:, :, None, :] * k.reshape(steps, batch, 3, hid)).reshape(steps, batch, gh)
        flat = drec.reshape(-1, gh)
        return dxp, flat.T @ hprev.reshape(-1, hid), flat.sum(axis=0), (dh,), None
    k[..., hid : 2 * hid] *= hprev  # dA_r = (dA_h @ R_h) * k_r
    dxp = np.empty_like(xp)
    r_zr, r_h = rd[zr_], rd[h_]
    for s in range(steps - 1, -1, -1):
        dhn = _step_grad(dh, gy, masks, s)
        da, ks = dxp[s], k[s]
        np.multiply(dhn, ks[:, h_], out=da[:, h_])
        np.multiply(dhn, ks[:, :hid], out=da[:, :hid])
        d_rh = da[:, h_] @ r_h  # the gradient of r * H_{t-1}
        np.multiply(d_rh, ks[:, hid : 2 * hid], out=da[:, hid : 2 * hid])
        dh_prev = dhn * z[s]
        dh_prev += d_rh * r[s]
        dh_prev += da[:, zr_] @ r_zr
        dh = _carry(dh_prev, dh, masks, s)
    flat = dxp.reshape(-1, gh)
    h2d = hprev.reshape(-1, hid)
    dr = np.empty_like(rd)
    dr[zr_] = flat[:, zr_].T @ h2d
    dr[h_] = flat[:, h_].T @ (r.reshape(-1, hid) * h2d)
    return dxp, dr, flat.sum(axis=0), (dh,), None


@register_vjp("GRU")
def gru_vjp(ctx: VJPContext) -> list:
    clip, lbr = ctx.attrs.get("clip"), bool(ctx.attrs.get("linear_before_reset", 0))

    def direction(d, xp, rd, rb, hprev, states, masks, gy, gfinal, acts):
        return _gru_direction(xp, rd, rb, hprev, states, masks, gy, gfinal, acts, clip=clip, lbr=lbr)

    return _layer_vjp(ctx, 3, 1, ["Sigmoid", "Tanh"], direction)[0]


# ---- RNN -------------------------------------------------------------------------------------------------
def _rnn_direction(xp, rd, rb, hprev, states, masks, gy, gfinal, acts, *, clip):
    steps, batch, hid = xp.shape
    (act,) = acts
    pre = _recurrent(hprev, rd.T)
    pre += xp
    pre += rb
    post = _activate(pre, act, clip, np.empty_like(pre))
    k = _derivative(pre, post, act, clip)
    dxp = np.empty_like(xp)
    dh = _start(gfinal[0], states[0])
    for s in range(steps - 1, -1, -1):
        np.multiply(_step_grad(dh, gy, masks, s), k[s], out=dxp[s])
        dh = _carry(dxp[s] @ rd, dh, masks, s)
    flat = dxp.reshape(-1, hid)
    return dxp, flat.T @ hprev.reshape(-1, hid), flat.sum(axis=0), (dh,), None


@register_vjp("RNN")
def rnn_vjp(ctx: VJPContext) -> list:
    clip = ctx.attrs.get("clip")

    def direction(d, xp, rd, rb, hprev, states, masks, gy, gfinal, acts):
        return _rnn_direction(xp, rd, rb, hprev, states, masks, gy, gfinal, acts, clip=clip)

    return _layer_vjp(ctx, 1, 1, ["Tanh"], direction)[0]
