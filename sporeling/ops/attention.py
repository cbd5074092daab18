"""Attention kernels: Attention (opset 23/24), RotaryEmbedding (23), LinearAttention (27) and the
preview FlexAttention (ai.onnx.preview 1), whose score and probability modifiers are subgraphs.

Grouped-query attention never materialises repeated K/V heads. Query head h reads KV head
h // group, so the (B, Hq, L, D) queries are viewed as (B, Hkv, group * L, D): each KV head then
meets its whole group of query heads in one matrix product, and the (B, Hkv, group * L, S) scores
are exactly the (B, Hq, L, S) scores in memory. The same view serves the probabilities @ V product.

Scores, masks and softmax are computed in float32 for half-precision inputs (or in the precision
softmax_precision asks for) and rounded back once; masked positions get -inf, so a fully masked
row yields NaN as it does in the ONNX reference.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op

_HALF = np.dtype(np.float16)
# softmax_precision values (TensorProto.DataType): float, float16, double; bfloat16 (16) runs as float32
_PRECISIONS = {1: np.dtype(np.float32), 10: _HALF, 11: np.dtype(np.float64)}


def _calc_dtype(dtype: np.dtype, softmax_precision=None) -> np.dtype:
    if softmax_precision:
        return _PRECISIONS.get(int(softmax_precision), np.dtype(np.float32))
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


def softmax_last(x: np.ndarray) -> np.ndarray:
    """In-place softmax over the last axis."""
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def grouped_product(x: np.ndarray, y: np.ndarray, kv_heads: int, out: np.ndarray | None = None) -> np.ndarray:
    """(B, Hq, L, *) @ (B, Hkv, *, N) -> (B, Hq, L, N) with query head h using KV head h // group,
    into out (C-contiguous) when given."""
    b, hq, rows, inner = x.shape
    if hq == kv_heads:
        return np.matmul(x, y, out=out)
    grouped_shape = (b, kv_heads, (hq // kv_heads) * rows)
    grouped = x.reshape(grouped_shape + (inner,))
    if out is not None:
        np.matmul(grouped, y, out=out.reshape(grouped_shape + (y.shape[-1],)))
        return out
    return np.matmul(grouped, y).reshape(b, hq, rows, y.shape[-1])


# ---- Attention ---------------------------------------------------------------------------------
def _heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, S, H*D) -> (B, H, S, D) view; 4-D inputs pass through."""
    if x.ndim == 4:
        return x
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)


def _infer_attention(ins, *, kv_num_heads=0, q_num_heads=0, **_attrs):
    q, k, v = ins[0], ins[1], ins[2]
    past_k = ins[4] if len(ins) > 4 else None
    if q.shape is None or k.shape is None or v.shape is None or (past_k is not None and past_k.shape is None):
        return None
    batch = q.shape[0]
    if len(q.shape) == 3:
        if not q_num_heads or not kv_num_heads:
            return None
        hq, hkv, seq_q = q_num_heads, kv_num_heads, q.shape[1]
        dk, dv, seq_kv = k.shape[2] // hkv, v.shape[2] // hkv, k.shape[1]
        y = (batch, seq_q, hq * dv)
    else:
        hq, hkv, seq_q = q.shape[1], k.shape[1], q.shape[2]
        dk, dv, seq_kv = k.shape[3], v.shape[3], k.shape[2]
        y = (batch, hq, seq_q, dv)
    total = seq_kv + (past_k.shape[2] if past_k is not None else 0)
    return [(q.dtype, y), (k.dtype, (batch, hkv, total, dk)), (v.dtype, (batch, hkv, total, dv)),
            (q.dtype, (batch, hq, seq_q, total))]


def _mask_bias(attn_mask, calc, seq_q: int, total: int, past: int, is_causal: int, nonpad, batch: int):
    """The additive bias (-inf where masked) broadcastable to (B, Hq, L, total), or None."""
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            bias = np.where(attn_mask, 0, -np.inf).astype(calc)
        else:
            bias = attn_mask.astype(calc)
        short = total - bias.shape[-1]
        if short > 0:  # a short mask is padded with -inf up to the total sequence length
            pad = np.full(bias.shape[:-1] + (short,), -np.inf, calc)
            bias = np.concatenate([bias, pad], axis=-1)
    if is_causal:
        # upper-left aligned on the new tokens: query i sees keys up to past + i
        hidden = np.arange(total)[None, :] > np.arange(seq_q)[:, None] + past
        causal = np.where(hidden, -np.inf, 0).astype(calc)
        bias = causal if bias is None else bias + causal
    if nonpad is not None:
        padded = np.arange(total)[None, :] >= np.asarray(nonpad).reshape(-1, 1)
        pad_bias = np.where(padded, -np.inf, 0).astype(calc).reshape(batch, 1, 1, total)
        bias = pad_bias if bias is None else bias + pad_bias
    return bias


def _slot(out, k: int, dtype: np.dtype) -> np.ndarray | None:
    """The planned buffer of output k when a result of dtype can be written into it directly."""
    if out is None or k >= len(out) or out[k] is None:
        return None
    buf = out[k]
    return buf if buf.dtype == dtype and buf.flags.c_contiguous else None


def _put(out, k: int, value: np.ndarray):
    """Delivers output k: copied into the planned buffer unless it was computed there."""
    if out is None or k >= len(out) or out[k] is None:
        return value
    if value is not out[k]:
        np.copyto(out[k], value, casting="unsafe")
    return out[k]


def _with_past(past: np.ndarray | None, new: np.ndarray, out, k: int) -> np.ndarray:
    """The present cache: past and new tokens joined on the sequence axis (into output k's buffer)."""
    if past is None:
        return new
    dst = _slot(out, k, np.result_type(past.dtype, new.dtype))
    return np.concatenate([past, new], axis=2, out=dst)


@register_op("Attention", since=23, infer=_infer_attention, out=True)
def attention(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *, is_causal=0,
              kv_num_heads=0, q_num_heads=0, qk_matmul_output_mode=0, scale=None, softcap=0.0,
              softmax_precision=None, out=None):
    if out is not None and not isinstance(out, (tuple, list)):
        out = (out,)
    three_d = q.ndim == 3
    q4 = _heads(q, q_num_heads)
    k4, v4 = _heads(k, kv_num_heads), _heads(v, kv_num_heads)
    batch, hq, seq_q, head = q4.shape
    present_k = _with_past(past_key, k4, out, 1)
    present_v = _with_past(past_value, v4, out, 2)
    total, hkv = present_k.shape[2], present_k.shape[1]
    past = 0 if past_key is None else past_key.shape[2]
    calc = _calc_dtype(q.dtype, softmax_precision)
    factor = (1.0 / np.sqrt(head)) if scale is None else scale

    q_scaled = np.multiply(q4, calc.type(factor), dtype=calc, order="C")
    scores = grouped_product(q_scaled, present_k.astype(calc, copy=False).swapaxes(-1, -2), hkv)
    want_qk = out is None or len(out) > 3 and out[3] is not None
    qk = scores.copy() if want_qk and qk_matmul_output_mode == 0 else None
    if softcap and softcap > 0:
        scores /= softcap
        np.tanh(scores, out=scores)
        scores *= softcap
    if want_qk and qk_matmul_output_mode == 1:
        qk = scores.copy()
    bias = _mask_bias(attn_mask, calc, seq_q, total, past, is_causal, nonpad_kv_seqlen, batch)
    if bias is not None:
        scores += bias
    if want_qk and qk_matmul_output_mode == 2:
        qk = scores.copy()
    softmax_last(scores)
    if qk_matmul_output_mode == 3 or qk is None:
        qk = scores  # the probabilities (not modified below); for an unrequested output, never read
    y4 = grouped_product(scores, present_v.astype(calc, copy=False), hkv, None if three_d else _slot(out, 0, calc))
    y = y4.transpose(0, 2, 1, 3).reshape(batch, seq_q, -1) if three_d else y4
    results = [
        _put(out, 0, y),
        _put(out, 1, present_k),
        _put(out, 2, present_v),
        _put(out, 3, qk),
    ]
    if out is not None:
        return tuple(out)
    dtypes = (q.dtype, k.dtype, v.dtype, q.dtype)
    return tuple(np.ascontiguousarray(r, dtype=dt) for r, dt in zip(results, dtypes))


# ---- RotaryEmbedding ---------------------------------------------------------------------------
def _infer_same(ins, **_attrs):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, x.shape)]


def _tokens_view(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, H, S, D) or (B, S, H*D) seen as (B, S, H, D) without copying."""
    if x.ndim == 4:
        return x.transpose(0, 2, 1, 3)
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads)


@register_op("RotaryEmbedding", since=23, infer=_infer_same, out=True)
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0, out=None):
    if out is None:
        out = np.empty_like(x)
    xs = _tokens_view(x, num_heads)
    ys = _tokens_view(out, num_heads)
    rot = rotary_embedding_dim or xs.shape[-1]
    half = rot // 2
    if position_ids is not None:
        cos, sin = cos_cache[position_ids], sin_cache[position_ids]
    else:
        cos, sin = cos_cache, sin_cache
    cos = cos[:, :, None, :half].astype(x.dtype, copy=False)  # (B, S, 1, rot/2)
    sin = sin[:, :, None, :half].astype(x.dtype, copy=False)
    if interleaved:
        x1, x2, y1, y2 = xs[..., 0:rot:2], xs[..., 1:rot:2], ys[..., 0:rot:2], ys[..., 1:rot:2]
    else:
        x1, x2, y1, y2 = xs[..., :half], xs[..., half:rot], ys[..., :half], ys[..., half:rot]
    # (y1, y2) = (x1 cos - x2 sin, x1 sin + x2 cos): a rotation of each (x1, x2) pair
    np.multiply(x1, cos, out=y1)
    y1 -= x2 * sin
    np.multiply(x1, sin, out=y2)
    y2 += x2 * cos
    if rot < xs.shape[-1]:
        ys[..., rot:] = xs[..., rot:]
    return out


# ---- LinearAttention ---------------------------------------------------------------------------
def _infer_linear_attention(ins, *, kv_num_heads=0, q_num_heads=0, **_attrs):
    q, k, v = ins[0], ins[1], ins[2]
    past = ins[3] if len(ins) > 3 else None
    if q.shape is None or k.shape is None or v.shape is None or not q_num_heads or not kv_num_heads:
        return None
    b, t = q.shape[0], q.shape[1]
    dk, dv = q.shape[2] // q_num_heads, v.shape[2] // kv_num_heads
    state_dtype = past.dtype if past is not None else q.dtype
    return [(q.dtype, (b, t, q_num_heads * dv)), (state_dtype, (b, kv_num_heads, dk, dv))]


def _time_major(x: np.ndarray, heads: int, calc) -> np.ndarray:
    """(B, T, H*D) -> contiguous (T, B, H, D) in calc."""
    b, t, hd = x.shape
    return np.ascontiguousarray(x.reshape(b, t, heads, hd // heads).transpose(1, 0, 2, 3), dtype=calc)


@register_op("LinearAttention", since=27, infer=_infer_linear_attention, out=True)
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64, kv_num_heads=0,
                     q_num_heads=0, scale=0.0, update_rule="gated_delta", out=None):
    """The recurrence is run step by step over T (what the spec defines; the chunked form is only a
    faster schedule of the same sums), batched over B and heads."""
    if update_rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ValueError(f"LinearAttention: unknown update_rule '{update_rule}'")
    gated, delta = update_rule in ("gated", "gated_delta"), update_rule in ("delta", "gated_delta")
    if gated and decay is None or delta and beta is None:
        raise ValueError(f"LinearAttention: update_rule '{update_rule}' needs the decay/beta inputs")
    calc = np.result_type(query.dtype, np.float32)
    b, t, _ = query.shape
    group = q_num_heads // kv_num_heads
    dk = query.shape[2] // q_num_heads
    dv = value.shape[2] // kv_num_heads
    q = _time_major(query, q_num_heads, calc).reshape(t, b, kv_num_heads, group, dk)
    k = _time_major(key, kv_num_heads, calc)
    v = _time_major(value, kv_num_heads, calc)
    if gated:
        per_head = decay.shape[2] == kv_num_heads
        gates = np.exp(_time_major(decay, kv_num_heads, calc))  # (T, B, Hkv, dk or 1)
        if per_head:
            gates = gates.reshape(t, b, kv_num_heads, 1)
    if delta:
        rates = _time_major(beta, beta.shape[2], calc)  # (T, B, Hkv or 1, 1)
    if past_state is None:
        state = np.zeros((b, kv_num_heads, dk, dv), calc)
    else:
        state = past_state.astype(calc, copy=True)
    factor = calc.type(scale if scale else 1.0 / np.sqrt(dk))
    outputs = np.empty((t, b, kv_num_heads, group, dv), calc)
    for step in range(t):
        if gated:
            state *= gates[step][..., None]
        k_t = k[step]
        if delta:
            # v <- beta * (v - S^T k): what the state already predicts for this key is replaced
            recalled = np.matmul(k_t[:, :, None, :], state)[:, :, 0, :]
            v_t = rates[step] * (v[step] - recalled)
        else:
            v_t = v[step]
        state += k_t[..., :, None] * v_t[..., None, :]
        np.matmul(q[step], state, out=outputs[step])
    outputs *= factor
    y = outputs.transpose(1, 0, 2, 3, 4).reshape(b, t, q_num_heads * dv)
    state_dtype = past_state.dtype if past_state is not None else query.dtype
    if out is None:
        return y.astype(query.dtype), state.astype(state_dtype)
    np.copyto(out[0], y, casting="unsafe")
    if len(out) > 1 and out[1] is not None:
        np.copyto(out[1], state, casting="unsafe")
    return out


# ---- FlexAttention (ai.onnx.preview) -----------------------------------------------------------
@register_op("FlexAttention", since=1, domain="ai.onnx.preview", context=True)
def flex_attention(q, k, v, *, scale=None, score_mod=None, prob_mod=None, softmax_precision=None, ctx=None):
    calc = _calc_dtype(q.dtype, softmax_precision)
    hkv = k.shape[1]
    factor = (1.0 / np.sqrt(q.shape[-1])) if scale is None else scale
    q_scaled = np.multiply(q, calc.type(factor), dtype=calc, order="C")
    scores = grouped_product(q_scaled, k.astype(calc, copy=False).swapaxes(-1, -2), hkv)
    if score_mod is not None:
        scores = np.array(ctx.run(score_mod, [scores])[0], dtype=calc)
    softmax_last(scores)
    if prob_mod is not None:
        scores = np.ascontiguousarray(ctx.run(prob_mod, [scores])[0], dtype=calc)
    return grouped_product(scores, v.astype(calc, copy=False), hkv).astype(v.dtype, copy=False)
