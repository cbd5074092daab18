"""Small models built here, ready to train: LeNet-5 and a conv32-conv64-fc128 CNN for 28x28 grey images.

They are plain ONNX-form graphs (Conv, Relu, MaxPool, Flatten, Gemm), initialised as PyTorch initialises
Conv2d and Linear (Kaiming-uniform weights with a = sqrt(5), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from
a seed, so `sporeling train zoo:cnn --data fashion-mnist/` needs no model file and no framework.
The larger networks of the trainable zoo come from files (ONNX exports, .spore).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SporelingError
from ..ir import Graph, Node, ValueInfo


class _Builder:
    def __init__(self, name: str, input_shape: tuple, seed: int):
        self.g = Graph(name=name, opsets={"": 17})
        self.g.inputs = [ValueInfo("input", np.dtype(np.float32), ("batch",) + tuple(input_shape))]
        self.rng = np.random.default_rng(seed)
        self.x = "input"
        self.k = 0

    def _uniform(self, shape, fan_in: int) -> np.ndarray:
        bound = 1.0 / math.sqrt(fan_in)  # Kaiming-uniform with a = sqrt(5) reduces to this bound too
        return self.rng.uniform(-bound, bound, shape).astype(np.float32)

    def _node(self, op: str, inputs: list[str], name: str, **attrs) -> None:
        self.k += 1
        out = f"{name}_out" if name else f"{op.lower()}{self.k}"
        self.g.nodes.append(Node(op, [self.x] + inputs, [out], attrs, name or f"{op}_{self.k}"))
        self.x = out

    def conv(self, name: str, cin: int, cout: int, k: int, pad: int = 0) -> _Builder:
        fan_in = cin * k * k
        self.g.initializers[f"{name}.weight"] = self._uniform((cout, cin, k, k), fan_in)
        self.g.initializers[f"{name}.bias"] = self._uniform((cout,), fan_in)
        self._node("Conv", [f"{name}.weight", f"{name}.bias"], name, kernel_shape=[k, k], pads=[pad] * 4)
        return self

    def linear(self, name: str, fin: int, fout: int) -> _Builder:
        self.g.initializers[f"{name}.weight"] = self._uniform((fout, fin), fin)
        self.g.initializers[f"{name}.bias"] = self._uniform((fout,), fin)
        self._node("Gemm", [f"{name}.weight", f"{name}.bias"], name, transB=1)
        return self

    def relu(self) -> _Builder:
        self._node("Relu", [], "")
        return self

    def pool(self) -> _Builder:
        self._node("MaxPool", [], "", kernel_shape=[2, 2], strides=[2, 2])
        return self

    def flatten(self) -> _Builder:
        self._node("Flatten", [], "", axis=1)
        return self

    def done(self, classes: int) -> Graph:
        self.g.nodes[-1].outputs = ["logits"]
        self.g.outputs = [ValueInfo("logits", np.dtype(np.float32), ("batch", classes))]
        return self.g


def lenet5(classes: int = 10, seed: int = 0) -> Graph:
    """LeNet-5 for 1x28x28: conv5x5(6, pad 2)-pool-conv5x5(16)-pool-fc120-fc84-fc(classes)."""
    b = _Builder("lenet5", (1, 28, 28), seed)
    b.conv("conv1", 1, 6, 5, pad=2).relu().pool().conv("conv2", 6, 16, 5).relu().pool().flatten()
    return b.linear("fc1", 400, 120).relu().linear("fc2", 120, 84).relu().linear("fc3", 84, classes).done(classes)


def small_cnn(classes: int = 10, seed: int = 0) -> Graph:
    """conv3x3(32)-conv3x3(64)-pool-fc128-fc(classes) for 1x28x28, the classic MNIST CNN."""
    b = _Builder("cnn", (1, 28, 28), seed)
    b.conv("conv1", 1, 32, 3).relu().conv("conv2", 32, 64, 3).relu().pool().flatten()
    return b.linear("fc1", 64 * 12 * 12, 128).relu().linear("fc2", 128, classes).done(classes)


ZOO = {"lenet5": lenet5, "cnn": small_cnn}


def build(name: str, classes: int = 10, seed: int = 0) -> Graph:
    """A zoo model by name ('lenet5', 'cnn'), also spelled 'zoo:NAME'."""
    key = name.removeprefix("zoo:")
    if key not in ZOO:
        raise SporelingError(f"no zoo model '{key}' (zoo: {', '.join('zoo:' + k for k in ZOO)})")
    return ZOO[key](classes=classes, seed=seed)
