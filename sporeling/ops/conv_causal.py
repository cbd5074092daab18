"""CausalConvWithState (opset 27): a stateful causal depthwise 1-D conv, as used by Mamba-style blocks.

The sequence seen by the conv is past_state (k - 1 steps, zeros when absent) followed by the
input; output t is sum_j w[c, j] * seq[t + j] (+ bias, optionally SiLU), and the new state is the
last k - 1 steps of that sequence. The k taps are k whole-array multiply-adds over (batch, channel,
length) slabs; half precision is computed in float32.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op


def _infer_causal(ins, **_attrs):
    x, w = ins[0], ins[1]
    if x is None or w is None or x.shape is None or w.shape is None:
        return None
    k = int(w.shape[-1])
    return [(x.dtype, tuple(x.shape)), (x.dtype, (x.shape[0], x.shape[1], k - 1))]


@register_op("CausalConvWithState", since=27, infer=_infer_causal, out=True)
def causal_conv_with_state(x, w, b=None, past_state=None, *, activation="none", out=None):
    act = (activation.decode() if isinstance(activation, bytes) else activation or "none").lower()
    if act not in ("none", "silu", "swish"):
        raise ValueError(f"CausalConvWithState: unknown activation '{activation}'")
    batch, chans, length = x.shape
    k = int(w.shape[-1])
    dt = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    seq = np.zeros((batch, chans, k - 1 + length), dt)
    if past_state is not None:
        seq[:, :, : k - 1] = past_state
    seq[:, :, k - 1 :] = x
    taps = np.asarray(w, dt).reshape(chans, k)
    y = np.multiply(seq[:, :, 0:length], taps[:, 0, None])
    tmp = np.empty_like(y)
    for j in range(1, k):
        np.multiply(seq[:, :, j : j + length], taps[:, j, None], out=tmp)
        y += tmp
    if b is not None:
        y += np.asarray(b, dt).reshape(chans, 1)
    if act != "none":  # SiLU: y * sigmoid(y)
        with np.errstate(over="ignore"):
            y *= 1 / (1 + np.exp(-y))
    state = seq[:, :, length:]
    if out is None:
        return y.astype(x.dtype), state.astype(x.dtype)
    y_out, state_out = out
    np.copyto(y_out, y, casting="unsafe")
    if state_out is not None:
        np.copyto(state_out, state, casting="unsafe")
    return y_out, state_out
