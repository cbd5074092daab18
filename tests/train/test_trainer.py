"""The Trainer against PyTorch and against itself: 20 steps of each optimizer on a CNN with BatchNormalization
give PyTorch's weights and running statistics; gradients, parameters and optimizer state as named arrays;
accumulation, checkpoints that resume bit-identically, transfer learning, mixed precision, Dropout, export."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest

import sporeling
from sporeling.errors import SporelingError
from sporeling.frontends.onnx import load_onnx
from sporeling.train import SGD, Adam, AdamW, CosineLR, Trainer, with_classifier
from sporeling.train.zoo import lenet5

torch = pytest.importorskip("torch")
nn = torch.nn


class BNNet(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        # no conv biases before BatchNormalization, as real networks: their gradient is 0 up to rounding, and
        # Adam scales rounding noise up to full steps, so they would only compare noise
        self.c1, self.b1 = nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2, bias=False), nn.BatchNorm2d(8)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = nn.functional.relu6(self.b2(self.c2(x)))
        return self.fc(self.drop(x.flatten(1)))


def _export(module, x, training=False) -> sporeling.Graph:
    f = io.BytesIO()
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.tensor(x),), f, input_names=["x"], output_names=["y"], dynamo=False,
                          do_constant_folding=False, training=mode, dynamic_axes={"x": {0: "n"}})
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "net.onnx")
        with open(path, "wb") as t:
            t.write(f.getvalue())
        return load_onnx(path)


def _data(seed=0, n=16):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 1, 16, 16)).astype(np.float32), r.integers(0, 5, n)


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-12)


OPTIMIZERS = [
    ("sgd", lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", lambda: Adam(lr=0.01, weight_decay=1e-3), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3)),
    ("adamw", lambda: AdamW(lr=0.01, weight_decay=0.05), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05)),
]


@pytest.mark.parametrize("name,ours,theirs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_twenty_steps_match_pytorch(name, ours, theirs):
    torch.manual_seed(0)
    net = BNNet()
    x0, _ = _data()
    t = Trainer(_export(net, x0), loss="cross_entropy", optimizer=ours(), seed=0)
    net.train()
    opt = theirs(net.parameters())
    for step in range(20):
        x, y = _data(seed=step)
        loss = t.step({"x": x}, y)
        opt.zero_grad()
        ref = nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        ref.backward()
        opt.step()
        assert abs(loss - ref.item()) <= 1e-4 * max(1.0, abs(ref.item())), f"step {step}: loss {loss} vs {ref.item()}"
    theirs_params = dict(net.named_parameters())
    params = t.get_parameters(state=True)
    assert set(t.parameters) == set(theirs_params)
    for k, v in params.items():
        want = (theirs_params[k] if k in theirs_params else net.state_dict()[k]).detach().numpy()
        assert _rel(v, want) <= 1e-4, f"{name}: {k} differs by {_rel(v, want):.2e} after 20 steps"


def test_gradients_and_parameters_as_named_arrays():
    t = Trainer(lenet5(), optimizer=SGD(lr=0.1), seed=0)
    x, y = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32), np.arange(8) % 10
    before = t.get_parameters()
    t.step({"input": x}, y)
    grads = t.get_gradients()
    assert set(grads) == set(before) == set(t.parameters)
    for k, g in grads.items():  # plain SGD: w1 = w0 - lr * g
        np.testing.assert_allclose(t.parameters[k], before[k] - 0.1 * g, rtol=1e-5, atol=1e-7)
    # apply_gradients is the optimizer update with given gradients: the same gradients again, the same step
    t2 = Trainer(lenet5(), optimizer=SGD(lr=0.1), seed=0)
    t2.apply_gradients(grads)
    for k in before:
        assert np.array_equal(t2.parameters[k], t.parameters[k])
    t2.set_parameters(before)
    assert all(np.array_equal(t2.parameters[k], before[k]) for k in before)
    momentum = Trainer(lenet5(), optimizer=SGD(lr=0.1, momentum=0.9), seed=0)
    momentum.step({"input": x}, y)
    state = momentum.get_optimizer_state()
    assert set(state) == {f"momentum_buffer/{k}" for k in before}
    fresh = Trainer(lenet5(), optimizer=SGD(lr=0.1, momentum=0.9), seed=0)
    fresh.set_parameters(momentum.get_parameters())
    fresh.set_optimizer_state(state)  # a device handed another's state: both now step alike
    momentum.step({"input": x}, y)
    fresh.step({"input": x}, y)
    assert all(np.array_equal(fresh.parameters[k], momentum.parameters[k]) for k in before)
    with pytest.raises(SporelingError, match="names no trainable parameter"):
        fresh.set_optimizer_state({"momentum_buffer/nope": np.zeros(3)})
    t2.learning_rate = 0.5
    assert t2.learning_rate == 0.5 and t2.optimizer.lr == 0.5
    with pytest.raises(SporelingError, match="not a trainable parameter"):
        t2.apply_gradients({"nope": np.zeros(3)})
    with pytest.raises(SporelingError, match="shape"):
        t2.apply_gradients({"fc3.bias": np.zeros(3)})
    with pytest.raises(SporelingError, match="shape"):
        t2.set_parameters({"fc3.bias": np.zeros(4)})


def test_accumulation_equals_one_big_batch():
    x, y = np.random.default_rng(2).random((16, 1, 28, 28), dtype=np.float32), np.arange(16) % 10
    big = Trainer(lenet5(), optimizer=SGD(lr=0.1, momentum=0.9), seed=0)
    big.step({"input": x}, y)
    acc = Trainer(lenet5(), optimizer=SGD(lr=0.1, momentum=0.9), seed=0, accumulate=2)
    acc.step({"input": x[:8]}, y[:8])
    assert all(np.array_equal(acc.parameters[k], v) for k, v in lenet5().initializers.items() if k in acc.parameters)
    acc.step({"input": x[8:]}, y[8:])
    for k in big.parameters:
        assert _rel(acc.parameters[k], big.parameters[k]) <= 1e-5, k


def test_checkpoint_resumes_bit_identically(tmp_path):
    torch.manual_seed(1)
    graph = _export(BNNet(dropout=0.3), _data()[0])
    make = lambda: Trainer(graph, optimizer=Adam(lr=0.01, schedule=CosineLR(10)), seed=7, accumulate=2)  # noqa: E731
    a = make()
    for step in range(10):
        a.step({"x": _data(seed=step)[0]}, _data(seed=step)[1])
    b = make()
    for step in range(5):  # an odd count: the checkpoint holds half an accumulation
        b.step({"x": _data(seed=step)[0]}, _data(seed=step)[1])
    b.save_checkpoint(tmp_path / "c.safetensors", extra={"note": "hi"})
    c = Trainer.load_checkpoint(tmp_path / "c.safetensors", graph)
    assert c.steps == 5 and c.extra == {"note": "hi"}
    for step in range(5, 10):
        c.step({"x": _data(seed=step)[0]}, _data(seed=step)[1])
    pa, pc = a.get_parameters(state=True), c.get_parameters(state=True)
    assert all(np.array_equal(pa[k], pc[k]) for k in pa)
    assert a.learning_rate == c.learning_rate


def test_dropout_is_seeded_and_active_only_in_training():
    torch.manual_seed(2)
    net = BNNet(dropout=0.5)
    graph = _export(net, _data()[0], training=True)  # TRAINING mode keeps Dropout in the graph
    assert any(n.op_type == "Dropout" for n in graph.nodes)
    x, y = _data()
    runs = []
    for _ in range(2):
        t = Trainer(graph, optimizer=SGD(lr=0.1), seed=3)
        runs.append([t.step({"x": x}, y) for _ in range(3)])
    assert runs[0] == runs[1]  # same seed, same masks
    assert len(set(runs[0])) == 3  # new masks (and weights) each step
    p1, p2 = t.predict({"x": x}), t.predict({"x": x})
    assert np.array_equal(p1, p2)  # inference: no Dropout


def test_transfer_learning_trains_only_the_new_head():
    graph = with_classifier(lenet5(), classes=3, seed=0)
    assert graph.outputs[0].name == "logits" and "fc3.weight" not in graph.initializers  # the old head went
    t = Trainer(graph, optimizer=Adam(lr=0.05), trainable=["classifier.*"])
    assert sorted(t.parameters) == ["classifier.bias", "classifier.weight"]
    frozen = {k: v.copy() for k, v in graph.initializers.items() if not k.startswith("classifier")}
    y = np.arange(12) % 3
    x = (np.random.default_rng(3).random((12, 1, 28, 28)) * 0.2 + y[:, None, None, None] * 0.4).astype(np.float32)
    losses = [t.step({"input": x}, y) for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0]
    assert set(t.get_gradients()) == {"classifier.bias", "classifier.weight"}
    inference = t.inference_graph()
    for k, v in frozen.items():
        assert np.array_equal(inference.initializers.get(k, v), v)
    with pytest.raises(SporelingError, match="matches no parameter"):
        Trainer(graph, trainable=["head.*"])


def test_mixed_precision_keeps_half_the_bytes_and_close_gradients():
    from sporeling.train.autograd import GraphAutograd

    torch.manual_seed(3)
    graph = _export(BNNet(), _data()[0])
    x, y = _data(n=32)
    full = GraphAutograd(graph, "f32")
    half = GraphAutograd(graph, "mixed", stash_float16=True)
    assert half.stash and all(v.endswith("__f16") for v in half.stash.values())
    gy = np.random.default_rng(4).standard_normal((32, 5)).astype(np.float32)
    grads = []
    for ag in (full, half):
        plan, env = ag.forward({"x": x})
        grads.append(ag.backward(plan, env, gy))
    for k in grads[0]:  # float16 activations (11-bit mantissas) change the gradients' size a little, not direction
        a, b = grads[1][k].ravel(), grads[0][k].ravel()
        assert float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b)) >= 0.999, k
    t = Trainer(graph, optimizer=SGD(lr=0.1), precision="mixed")
    loss = [t.step({"x": x}, y) for _ in range(5)]
    assert t.loss_scale == 2.0 ** 15 and t.skipped_steps == 0 and loss[-1] < loss[0]


def test_export_float_and_int8(tmp_path):
    torch.manual_seed(4)
    graph = _export(BNNet(), _data()[0])
    t = Trainer(graph, optimizer=SGD(lr=0.1, momentum=0.9))
    for s in range(5):
        t.step({"x": _data(seed=s)[0]}, _data(seed=s)[1])
    x = _data(seed=9)[0]
    want = t.predict({"x": x})
    f = t.export(tmp_path / "f.spore")
    q = t.export(tmp_path / "q.spore", quantize="int8")
    m = sporeling.load(f["path"])
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.nodes)  # folded
    np.testing.assert_allclose(m.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)
    got = sporeling.load(q["path"]).run({"x": x})["y"]
    cos = float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos > 0.99
    with pytest.raises(ValueError, match="quantize"):
        t.export(tmp_path / "x.spore", quantize="int4")


def test_evaluate_reports_loss_and_accuracy():
    t = Trainer(lenet5(), seed=0)
    x = np.random.default_rng(5).random((10, 1, 28, 28), dtype=np.float32)
    y = np.arange(10)
    ev = t.evaluate({"input": x}, y, batch=4)
    pred = t.predict({"input": x})
    assert ev["samples"] == 10 and ev["accuracy"] == float(np.mean(pred.argmax(1) == y))
    assert ev["loss"] == pytest.approx(float(t.loss.value(pred, y)), rel=1e-5)


def test_errors_name_what_is_wrong():
    with pytest.raises(SporelingError, match="missing input"):
        Trainer(lenet5()).step({}, np.zeros(1, np.int64))
    with pytest.raises(SporelingError, match="dtype float64, expected float32"):  # checked as inference checks
        Trainer(lenet5()).step({"input": np.zeros((2, 1, 28, 28))}, np.zeros(2, np.int64))
    with pytest.raises(SporelingError, match=r"shape \[2, 28, 28, 1\]"):
        Trainer(lenet5()).step({"input": np.zeros((2, 28, 28, 1), np.float32)}, np.zeros(2, np.int64))
    with pytest.raises(SporelingError, match="no output"):
        Trainer(lenet5(), output="nope")
    with pytest.raises(ValueError, match="accumulate"):
        Trainer(lenet5(), accumulate=0)
    with pytest.raises(SporelingError, match="the loss is"):
        t = Trainer(lenet5(), optimizer=SGD(lr=1e30))
        x = np.ones((2, 1, 28, 28), np.float32)
        for _ in range(5):
            t.step({"input": x}, np.array([0, 1]))
