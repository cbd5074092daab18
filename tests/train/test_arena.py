"""The training step's one arena: activations and the backward pass's gradients are placed together, the gradients
over memory the forward pass has finished with; parameters' gradients are the step's results, never the arena."""

from __future__ import annotations

import numpy as np

from sporeling.train import SGD, Trainer
from sporeling.train.zoo import lenet5, small_cnn


def _batch(n: int, seed: int = 0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 1, 28, 28)).astype(np.float32), r.integers(0, 10, n)


def _trained_plan(graph, n=16, **kw):
    t = Trainer(graph, loss="cross_entropy", optimizer=SGD(lr=0.01, momentum=0.9), seed=0, **kw)
    x, y = _batch(n)
    t.step(x, y)
    plans = list(t.autograd.session._plans.values())
    assert len(plans) == 1
    return t, plans[0]


def _range(a: np.ndarray, base: int) -> tuple[int, int]:
    start = a.__array_interface__["data"][0] - base
    return start, start + a.nbytes


def test_gradients_are_planned_in_the_activations_arena():
    t, plan = _trained_plan(lenet5())
    bw = plan._bw
    # every value between the loss and the first trainable layer has its gradient planned: LeNet-5's 14 nodes
    # less the first Conv's input (the data, which needs none)
    assert len(bw.buffers) >= 12
    views = [v for v in plan.template if isinstance(v, np.ndarray) and v.base is not None and v.size]
    arena = bw.arena
    assert all(np.shares_memory(b, arena) for b in bw.buffers.values())
    # the activations are views of that same arena: one allocation for the whole step
    activations = [v for v in views if not any(v is b for b in bw.buffers.values())]
    assert activations and all(np.shares_memory(v, arena) for v in activations)
    assert arena.nbytes >= plan.arena.arena_size


def test_gradients_reuse_memory_the_forward_pass_is_done_with():
    t, plan = _trained_plan(small_cnn(), n=32)
    bw = plan._bw
    base = bw.arena.__array_interface__["data"][0]
    grads = [_range(b, base) for b in bw.buffers.values() if b.nbytes]
    fwd = [_range(v, base) for v in plan.template if isinstance(v, np.ndarray) and v.base is not None and v.size
           and not any(v is b for b in bw.buffers.values())]
    over = sum(g1 - g0 for g0, g1 in grads if any(f0 < g1 and g0 < f1 for f0, f1 in fwd))
    total = sum(g1 - g0 for g0, g1 in grads)
    assert over >= 0.5 * total, f"only {over} of {total} gradient bytes lie over forward values"
    # and the arena is well below what allocating every activation and gradient apart would take
    assert plan.arena.arena_size < 0.7 * plan.arena.total_size


def test_a_frozen_backbone_plans_no_gradient_below_the_head():
    t, plan = _trained_plan(lenet5(), trainable=["fc3.*"])
    bw = plan._bw
    assert [st.node.op_type for st, *_ in bw.steps] == ["Gemm"]
    assert len(bw.buffers) == 1  # the logits' gradient, and nothing below fc3
    assert sorted(t.get_gradients()) == ["fc3.bias", "fc3.weight"]


def test_parameter_gradients_are_results_that_outlive_the_next_step():
    t, plan = _trained_plan(lenet5())
    x, y = _batch(16, seed=1)
    _, first = t.compute_gradients(x, y)
    kept = {k: v.copy() for k, v in first.items()}
    assert not any(np.shares_memory(g, plan._bw.arena) for g in first.values())
    x2, y2 = _batch(16, seed=2)
    _, second = t.compute_gradients(x2, y2)
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])  # the next step wrote nothing over them
        assert not np.array_equal(second[k], kept[k])
    # and the same batch again gives the same gradients: nothing left over in the arena changes them
    _, again = t.compute_gradients(x, y)
    for k in kept:
        np.testing.assert_array_equal(again[k], kept[k])


def test_each_batch_shape_gets_its_own_plan_and_arena():
    """A short last batch prepares a second plan (its own arena and gradient buffers); going back to the full
    batch reuses the first, and each gives the gradients a fresh trainer gives on that batch alone."""
    t = Trainer(lenet5(), loss="cross_entropy", optimizer=SGD(lr=0.01), seed=0)
    (x, y), (x5, y5) = _batch(16), _batch(5, seed=3)
    _, full = t.compute_gradients(x, y)
    _, short = t.compute_gradients(x5, y5)
    _, again = t.compute_gradients(x, y)
    plans = list(t.autograd.session._plans.values())
    assert len(plans) == 2 and plans[0]._bw.arena is not plans[1]._bw.arena
    fresh = Trainer(lenet5(), loss="cross_entropy", optimizer=SGD(lr=0.01), seed=0)
    _, alone = fresh.compute_gradients(x5, y5)
    for k in full:
        np.testing.assert_array_equal(again[k], full[k])
        np.testing.assert_array_equal(short[k], alone[k])


def test_mixed_precision_widens_float16_copies_into_the_arena():
    """Under mixed precision backward reads float16 copies; each is widened to float32 into an arena buffer
    planned for the one step that reads it, giving the gradients a fresh float32 array would."""
    t, plan = _trained_plan(lenet5(), precision="mixed")
    bw = plan._bw
    widened = [b for step in bw.steps for b in step[5].values()]
    assert widened and all(b.dtype == np.float32 and np.shares_memory(b, bw.arena) for b in widened)
    x, y = _batch(16, seed=1)
    _, planned = t.compute_gradients(x, y)
    bw.steps = [(*step[:5], {}, step[6]) for step in bw.steps]  # the same step, widening into fresh arrays
    _, fresh = t.compute_gradients(x, y)
    for k in planned:
        np.testing.assert_array_equal(planned[k], fresh[k])


def test_conv_scratch_is_planned_in_the_arena_for_its_step():
    """The Conv whose backward takes the tap GEMMs (the CNN's first layer: W's gradient only) gets its scratch
    from an arena buffer planned for its step, and takes nothing from the heap."""
    from sporeling.train import vjp

    t, plan = _trained_plan(small_cnn(), n=32)
    scratch = [(step[0].node.op_type, step[6]) for step in plan._bw.steps if step[6] is not None]
    assert scratch and all(op == "Conv" and np.shares_memory(buf, plan._bw.arena) for op, buf in scratch)
    used = []
    rule = vjp.VJPS["Conv"]

    def spy(ctx):
        res = rule(ctx)
        if ctx.work is not None:
            used.append((ctx.work.high, ctx.work.missed, ctx.work.buf.nbytes))
        return res

    vjp.VJPS["Conv"] = spy
    try:
        t.step(*_batch(32, seed=4))
    finally:
        vjp.VJPS["Conv"] = rule
    assert used and all(high == size and missed == 0 for high, missed, size in used)
