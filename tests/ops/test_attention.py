"""Attention, RotaryEmbedding, LinearAttention and FlexAttention.

Attention and RotaryEmbedding are checked against onnxruntime (and plain attention against
torch's scaled_dot_product_attention); LinearAttention against onnxruntime; FlexAttention, which
onnxruntime does not run, against ONNX's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.oracle import run_ort, run_sporeling

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import helper, numpy_helper  # noqa: E402


def build(op_type, inputs, outputs, attrs, opset=23, constants=(), domain=""):
    """One-node model; inputs is a list of (name, array or None) in ONNX order, None = omitted."""
    while inputs and inputs[-1][1] is None:
        inputs = inputs[:-1]
    names = [n if a is not None else "" for n, a in inputs]
    node = helper.make_node(op_type, names, outputs, domain=domain, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for n, a in inputs if a is not None and n not in constants]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if a is not None and n in constants]
    g = helper.make_graph([node], "t", graph_inputs, [onnx.ValueInfoProto(name=o) for o in outputs if o], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(g, opset_imports=opsets, ir_version=10)
    feeds = {n: a for n, a in inputs if a is not None and n not in constants}
    return model, feeds


def _reference(model, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


def compare(model, feeds, rtol=1e-4, atol=1e-5, oracle=run_ort):
    ours, theirs = run_sporeling(model, feeds), oracle(model, feeds)
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, a.shape, b.dtype, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"output {k}")
    return ours


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---- Attention ---------------------------------------------------------------------------------
attention_config = st.fixed_dictionaries({
    "batch": st.integers(1, 2), "seq_q": st.integers(1, 4), "seq_kv": st.integers(1, 5), "past": st.integers(0, 3),
    "kv_heads": st.integers(1, 3), "group": st.integers(1, 3), "head": st.sampled_from([2, 4, 8]),
    "v_head": st.sampled_from([2, 4, 6]), "three_d": st.booleans(),
    "mask": st.sampled_from(["none", "bool2d", "float2d", "float4d", "bool4d", "short"]),
    "causal": st.integers(0, 1), "softcap": st.sampled_from([0.0, 1.5]), "scale": st.sampled_from([None, 0.3]),
    "qk_mode": st.sampled_from([None, 0, 1, 2, 3]),
})


def attention_case(rng, cfg):
    b, lq, lkv, past = cfg["batch"], cfg["seq_q"], cfg["seq_kv"], cfg["past"]
    hkv, hq, d, dv = cfg["kv_heads"], cfg["kv_heads"] * cfg["group"], cfg["head"], cfg["v_head"]
    total = past + lkv
    if cfg["three_d"]:
        q, k, v = _rand(rng, (b, lq, hq * d)), _rand(rng, (b, lkv, hkv * d)), _rand(rng, (b, lkv, hkv * dv))
    else:
        q, k, v = _rand(rng, (b, hq, lq, d)), _rand(rng, (b, hkv, lkv, d)), _rand(rng, (b, hkv, lkv, dv))
    mask = None
    kind = cfg["mask"]
    if kind != "none":
        shape = {"bool2d": (lq, total), "float2d": (lq, total), "float4d": (b, 1, lq, total),
                 "bool4d": (b, hq, lq, total), "short": (lq, max(1, total - 2))}[kind]
        if kind.startswith("bool"):
            mask = rng.random(shape) > 0.3
            mask[..., 0] = True  # no fully masked rows: their softmax is 0/0
        else:
            mask = _rand(rng, shape)
    inputs = [("Q", q), ("K", k), ("V", v), ("attn_mask", mask)]
    outputs = ["Y"]
    if past:
        inputs += [("past_key", _rand(rng, (b, hkv, past, d))), ("past_value", _rand(rng, (b, hkv, past, dv)))]
        outputs += ["present_key", "present_value"]
    attrs = {"is_causal": cfg["causal"]}
    if cfg["three_d"]:
        attrs.update(q_num_heads=hq, kv_num_heads=hkv)
    if cfg["softcap"]:
        attrs["softcap"] = cfg["softcap"]
    if cfg["scale"] is not None:
        attrs["scale"] = cfg["scale"]
    if cfg["qk_mode"] is not None:
        outputs += [""] * (3 - len(outputs)) + ["qk"]
        attrs["qk_matmul_output_mode"] = cfg["qk_mode"]
    return inputs, outputs, attrs


@settings(max_examples=25, deadline=None)
@given(cfg=attention_config, const_kv=st.booleans(), seed=st.integers(0, 2**16))
def test_attention_matches_onnxruntime(cfg, const_kv, seed):
    rng = np.random.default_rng(seed)
    # ONNX's reference (which generated the node suite) is the oracle where onnxruntime departs from
    # it: onnxruntime rejects masks shorter than the total sequence (the reference pads them with
    # -inf), writes masked scores as float32's lowest value instead of -inf, and aligns the causal
    # mask with a KV cache at the bottom right where the reference offsets it by the past length
    use_reference = cfg["mask"] == "short" or cfg["qk_mode"] == 2 or cfg["causal"] and cfg["past"]
    if use_reference:
        # and neither oracle fits these: the reference turns a causal boolean mask into NaNs
        # (0 * -inf) and returns softcapped scores for qk_matmul_output_mode 0 (the spec: raw ones)
        cfg = {**cfg, "mask": cfg["mask"].replace("bool", "float") if cfg["causal"] else cfg["mask"]}
        if cfg["softcap"] and cfg["qk_mode"] == 0:
            cfg["qk_mode"] = 1
    inputs, outputs, attrs = attention_case(rng, cfg)
    consts = ("K", "V", "attn_mask") if const_kv else ()
    oracle = _reference if use_reference else run_ort
    compare(*build("Attention", inputs, outputs, attrs, constants=consts), oracle=oracle)


def test_attention_nonpad_kv_seqlen():
    rng = np.random.default_rng(20)
    q, k, v = _rand(rng, (2, 3, 4, 8)), _rand(rng, (2, 3, 6, 8)), _rand(rng, (2, 3, 6, 10))
    inputs = [("Q", q), ("K", k), ("V", v), ("attn_mask", _rand(rng, (2, 3, 4, 6))), ("past_key", None),
              ("past_value", None), ("nonpad_kv_seqlen", np.array([3, 6], np.int64))]
    compare(*build("Attention", inputs, ["Y"], {}, opset=24))


def test_attention_half_precision():
    rng = np.random.default_rng(21)
    inputs, outputs, attrs = attention_case(rng, {"batch": 2, "seq_q": 3, "seq_kv": 5, "past": 2, "kv_heads": 2,
                                                  "group": 2, "head": 8, "v_head": 8, "three_d": False,
                                                  "mask": "float2d", "causal": 1, "softcap": 0.0, "scale": None,
                                                  "qk_mode": None})
    inputs = [(n, None if a is None else a.astype(np.float16)) for n, a in inputs]
    ours = compare(*build("Attention", inputs, outputs, attrs), rtol=5e-3, atol=5e-3)
    assert all(o.dtype == np.float16 for o in ours)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("groups", [1, 3])
def test_attention_matches_torch_sdpa(causal, groups):
    rng = np.random.default_rng(22)
    q, k, v = _rand(rng, (2, 2 * groups, 5, 8)), _rand(rng, (2, 2, 5, 8)), _rand(rng, (2, 2, 5, 8))
    model, feeds = build("Attention", [("Q", q), ("K", k), ("V", v)], ["Y"], {"is_causal": int(causal)})
    (y,) = run_sporeling(model, feeds)
    want = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), is_causal=causal, enable_gqa=groups > 1)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-4, atol=1e-5)


# ---- RotaryEmbedding ---------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 2), heads=st.integers(1, 3), seq=st.integers(1, 4), half=st.integers(1, 4),
       partial=st.booleans(), interleaved=st.integers(0, 1), three_d=st.booleans(), with_ids=st.booleans(),
       const_cache=st.booleans(), seed=st.integers(0, 2**16))
def test_rotary_embedding_matches_onnxruntime(batch, heads, seq, half, partial, interleaved, three_d, with_ids,
                                              const_cache, seed):
    rng = np.random.default_rng(seed)
    head = 2 * half + (2 if partial else 0)
    rot = 2 * half
    x = _rand(rng, (batch, seq, heads * head) if three_d else (batch, heads, seq, head))
    if with_ids:
        cos, sin = _rand(rng, (10, half)), _rand(rng, (10, half))
        ids = rng.integers(0, 10, (batch, seq)).astype(np.int64)
    else:
        cos, sin, ids = _rand(rng, (batch, seq, half)), _rand(rng, (batch, seq, half)), None
    attrs = {"interleaved": interleaved}
    if partial:
        attrs["rotary_embedding_dim"] = rot
    if three_d:
        attrs["num_heads"] = heads
    inputs = [("X", x), ("cos", cos), ("sin", sin), ("ids", ids)]
    compare(*build("RotaryEmbedding", inputs, ["Y"], attrs, constants=("cos", "sin") if const_cache else ()))


# ---- LinearAttention ---------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(rule=st.sampled_from(["linear", "gated", "delta", "gated_delta"]), batch=st.integers(1, 2),
       steps=st.integers(1, 4), kv_heads=st.integers(1, 2), group=st.integers(1, 2), dk=st.sampled_from([2, 4]),
       dv=st.sampled_from([2, 3]), with_past=st.booleans(), per_head_decay=st.booleans(), scalar_beta=st.booleans(),
       seed=st.integers(0, 2**16))
def test_linear_attention_matches_onnxruntime(rule, batch, steps, kv_heads, group, dk, dv, with_past, per_head_decay,
                                              scalar_beta, seed):
    rng = np.random.default_rng(seed)
    hq = kv_heads * group
    key = _rand(rng, (batch, steps, kv_heads, dk))
    key /= np.linalg.norm(key, axis=-1, keepdims=True)  # delta rules expect unit keys
    inputs = [("query", _rand(rng, (batch, steps, hq * dk))), ("key", key.reshape(batch, steps, -1)),
              ("value", _rand(rng, (batch, steps, kv_heads * dv))),
              ("past_state", _rand(rng, (batch, kv_heads, dk, dv)) if with_past else None)]
    decay = -np.abs(_rand(rng, (batch, steps, kv_heads if per_head_decay else kv_heads * dk))) * 0.3
    beta = 1 / (1 + np.exp(-_rand(rng, (batch, steps, 1 if scalar_beta else kv_heads))))
    inputs += [("decay", decay if "gated" in rule else None), ("beta", beta if "delta" in rule else None)]
    attrs = {"q_num_heads": hq, "kv_num_heads": kv_heads, "update_rule": rule}
    compare(*build("LinearAttention", inputs, ["out", "state"], attrs, opset=27), rtol=1e-4, atol=1e-5)


# ---- FlexAttention -----------------------------------------------------------------------------
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_mod", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_flex_attention_matches_reference(groups, with_mod, dtype):
    rng = np.random.default_rng(23)
    q, k, v = _rand(rng, (2, 2 * groups, 3, 4), dtype), _rand(rng, (2, 2, 5, 4), dtype), _rand(rng, (2, 2, 5, 6), dtype)
    attrs = {"scale": 0.4}
    if with_mod:
        bias = numpy_helper.from_array(_rand(rng, (3, 5)), "bias")
        body = helper.make_graph([helper.make_node("Add", ["scores", "bias"], ["out"])], "score_mod",
                                 [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, None)],
                                 [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)], [bias])
        attrs["score_mod"] = body
    model, feeds = build("FlexAttention", [("Q", q), ("K", k), ("V", v)], ["Y"], attrs, opset=26,
                         domain="ai.onnx.preview")
    tol = 1e-3 if dtype == np.float16 else 1e-5
    compare(model, feeds, rtol=tol, atol=tol, oracle=_reference)
