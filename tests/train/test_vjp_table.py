"""The backward-rule table itself: registration, lookup, and unbroadcast."""

import numpy as np
import pytest

from sporeling.errors import SporelingError
from sporeling.train.vjp import VJPS, VJPContext, register_vjp, unbroadcast, vjp_for


def test_unbroadcast_sums_what_broadcasting_added():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2, 3, 4, 5))
    for shape in [(2, 3, 4, 5), (4, 5), (1, 5), (3, 1, 1), (1, 1, 1, 1), (), (2, 1, 4, 1)]:
        got = unbroadcast(g, shape)
        assert got.shape == shape
        # the adjoint of broadcasting: <g, broadcast(x)> == <unbroadcast(g), x> for any x
        x = rng.standard_normal(shape)
        assert np.isclose(np.sum(g * np.broadcast_to(x, g.shape)), np.sum(got * x))


def test_registry_refuses_twins_and_names_missing_rules():
    @register_vjp("TestOnlyOp")
    def rule(ctx):
        return [ctx.grads[0]]

    assert vjp_for("TestOnlyOp") is rule
    with pytest.raises(ValueError, match="already registered"):
        register_vjp("TestOnlyOp")(rule)
    del VJPS["TestOnlyOp"]
    with pytest.raises(SporelingError, match="no backward rule for NoSuchOp"):
        vjp_for("NoSuchOp")


def test_context_wants_every_present_input_by_default():
    ctx = VJPContext("Add", {}, [np.ones(2), None], [np.ones(2)], [np.ones(2)])
    assert ctx.needs == [True, False]


def test_the_table_covers_the_cnn_and_transformer_ops():
    import sporeling.train as train

    wanted = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization", "MaxPool",
              "AveragePool", "GlobalAveragePool", "Relu", "Clip", "HardSwish", "Sigmoid", "Gelu", "Softmax",
              "Add", "Mul", "Concat", "Slice", "Reshape", "Transpose", "Dropout"}
    assert wanted <= set(train.VJPS), sorted(wanted - set(train.VJPS))
