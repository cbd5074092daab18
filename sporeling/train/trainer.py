"""The Trainer: one object that trains a loaded model on the device and hands back an inference model.

`Trainer(model, loss, optimizer, seed, trainable)` makes the model's graph trainable (sporeling.train.autograd),
and `step(feeds, labels)` runs forward, the loss, backward and the optimizer update, returning the loss.
Parameters are the model's initializer names; `trainable` (glob patterns) picks which learn, the rest stay
frozen and get no gradient. With `accumulate=k`, gradients of k calls are summed (each scaled by 1/k, so
a virtual batch k times larger) before one update.

For federated learning the gradients of the last step, the parameters and the optimizer state are named
NumPy arrays: get_gradients / apply_gradients, get_parameters / set_parameters, get_optimizer_state.

Checkpoints (save_checkpoint / load_checkpoint) hold everything the next step depends on -- parameters,
running statistics, optimizer state, accumulated gradients, step count, the Dropout generator's state and
whatever the caller adds (the data order) -- in one safetensors file with JSON metadata, written atomically,
so a run killed at any moment and resumed from its last checkpoint ends bit-identical to one never stopped.

precision="mixed" keeps the activations backward reads in float16 (half their memory) with float32 weights,
gradients and arithmetic, under dynamic loss scaling.

evaluate() and export() use the model's inference form with the current weights: BatchNormalization with
its running statistics (folded into the convolutions by the graph passes), Dropout as the identity.
"""

from __future__ import annotations

import copy
import os
import tempfile

import numpy as np

from ..errors import SporelingError
from ..ir import Graph
from .autograd import GraphAutograd, _untie_identities
from .checkpoint import generator_from_state, generator_state, read_checkpoint, write_checkpoint
from .losses import accuracy, get_loss
from .optim import SGD, Optimizer, optimizer_from_config

INITIAL_LOSS_SCALE = 2.0 ** 15
SCALE_GROWTH_STEPS = 2000


def _inference_form(g: Graph) -> None:
    """A graph exported in training mode made an inference graph: Dropout becomes Identity and
    BatchNormalization uses its running statistics (its statistic outputs dropped where nothing reads them)."""
    from ..ir import Node

    used = {x for n in g.nodes for x in n.inputs} | {v.name for v in g.outputs}
    nodes = []
    for n in g.nodes:
        if n.op_type == "Dropout" and n.domain in ("", "ai.onnx") and not (len(n.outputs) > 1 and n.outputs[1] in used):
            n = Node("Identity", [n.inputs[0]], [n.outputs[0]], {}, n.name)
        elif n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx") and n.attrs.get("training_mode"):
            if not any(o in used for o in n.outputs[1:] if o):
                n.attrs = {k: v for k, v in n.attrs.items() if k != "training_mode"}
                n.outputs = n.outputs[:1]
        nodes.append(n)
    g.nodes = nodes


def _graph_of(model) -> tuple[Graph, str]:
    """The graph to train: as imported, before the inference passes fold BatchNormalization away."""
    from ..model import Model, load_graph

    if isinstance(model, (str, os.PathLike)):
        return load_graph(model), os.fspath(model)
    if isinstance(model, Model):
        if os.path.isfile(model.source):
            return load_graph(model.source), model.source
        return model.graph, model.source
    if isinstance(model, Graph):
        return model, model.name
    raise TypeError(f"Trainer needs a sporeling Model, a Graph or a model path, got {type(model).__name__}")


class Trainer:
    def __init__(self, model, loss="cross_entropy", optimizer: Optimizer | None = None, seed: int = 0,
                 trainable=None, frozen=None, output: str | None = None, accumulate: int = 1,
                 precision: str = "float32"):
        if not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"accumulate must be a positive int, got {accumulate!r}")
        if precision not in ("float32", "mixed"):
            raise ValueError(f"precision must be 'float32' or 'mixed', got {precision!r}")
        graph, source = _graph_of(model)
        self.source = source
        self._graph = graph
        self.precision = precision
        self.autograd = GraphAutograd(graph, source, trainable=trainable, frozen=frozen, output=output, seed=seed,
                                      stash_float16=precision == "mixed")
        # dynamic loss scaling (mixed precision): the loss gradient is scaled up so small gradients survive
        # float16; a step whose gradients overflow is skipped and the scale halved, and the scale doubles
        # after SCALE_GROWTH_STEPS good steps in a row
        self.loss_scale = INITIAL_LOSS_SCALE if precision == "mixed" else 1.0
        self._good_steps = 0
        self.skipped_steps = 0
        self.loss_spec = loss
        self.loss = get_loss(loss)
        self.optimizer = optimizer if optimizer is not None else SGD(lr=0.01)
        self.seed = seed
        self.accumulate = accumulate
        self.steps = 0  # calls of step()
        self._micro = 0  # calls since the last update
        self._acc: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._eval = None  # (version, Model): the inference model last built, and for which parameters
        self._version = 0  # bumps whenever parameters change
        self.extra: dict = {}  # what the caller stored in the checkpoint this trainer was loaded from
        self.last_output: np.ndarray | None = None  # the chosen output of the last step (batch accuracy)

    # ---- names ---------------------------------------------------------------------------------
    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable parameters themselves (not copies): the arrays the optimizer updates."""
        return self.autograd.params

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.autograd.session.inputs]

    def _feeds(self, feeds) -> dict[str, np.ndarray]:
        if isinstance(feeds, dict):
            return feeds
        names = self.input_names
        if len(names) != 1:
            raise SporelingError(f"{self.source}: the model has {len(names)} inputs ({', '.join(names)}); "
                                 "pass a dict of name -> array")
        return {names[0]: feeds}

    # ---- training ----------------------------------------------------------------------------------
    def compute_gradients(self, feeds, labels) -> tuple[float, dict[str, np.ndarray]]:
        """Forward, loss and backward without an update; running statistics are updated as in step()."""
        ag = self.autograd
        ag.training = True
        plan, env = ag.forward(self._feeds(feeds))
        pred = ag.output_of(plan, env)
        self.last_output = pred  # a graph output: a fresh buffer each step, never the arena
        loss, dpred = self.loss(pred, np.asarray(labels))
        if not np.isfinite(loss):
            raise SporelingError(f"{self.source}: the loss is {loss} at step {self.steps}: lower the learning rate")
        factor = self.loss_scale / self.accumulate
        if factor != 1:
            dpred = dpred * dpred.dtype.type(factor)
        grads = ag.backward(plan, env, dpred)
        ag.update_state(plan, env)
        if self.loss_scale != 1:
            finite = all(np.isfinite(g).all() for g in grads.values())
            if not finite:  # overflow: this step's gradients are dropped, the scale halves
                self.loss_scale /= 2
                self._good_steps = 0
                self.skipped_steps += 1
                return float(loss), {}
            for g in grads.values():
                g *= g.dtype.type(1.0 / self.loss_scale)
            self._good_steps += 1
            if self._good_steps >= SCALE_GROWTH_STEPS:
                self.loss_scale *= 2
                self._good_steps = 0
        return float(loss), grads

    def step(self, feeds, labels) -> float:
        """One training step on a batch; returns its loss (a float). With accumulate=k the parameters change on
        every k-th call."""
        loss, grads = self.compute_gradients(feeds, labels)
        self._grads = grads
        self.steps += 1
        if not grads:  # a skipped step (mixed precision overflow): nothing to apply
            return loss
        if self.accumulate == 1:
            self.optimizer.step(self.autograd.params, grads)
            self._version += 1
            return loss
        for name, g in grads.items():
            acc = self._acc.get(name)
            if acc is None:
                self._acc[name] = g.copy()
            else:
                acc += g
        self._micro += 1
        if self._micro == self.accumulate:
            self.optimizer.step(self.autograd.params, self._acc)
            self._acc, self._micro = {}, 0
            self._version += 1
        return loss

    def get_gradients(self) -> dict[str, np.ndarray]:
        """The gradients of the last step, by parameter name: of its own batch (divided by `accumulate` when
        accumulating, as they are summed into the update); empty after a step mixed precision skipped."""
        return {k: v.copy() for k, v in self._grads.items()}

    def apply_gradients(self, grads: dict[str, np.ndarray]) -> None:
        """One optimizer update with the given gradients (e.g. averaged over devices by a federated server)."""
        params = self.autograd.params
        checked = {}
        for name, g in grads.items():
            if name not in params:
                raise SporelingError(f"{self.source}: gradient for '{name}', which is not a trainable parameter")
            g = np.asarray(g)
            if g.shape != params[name].shape:
                raise SporelingError(f"{self.source}: gradient '{name}' has shape {list(g.shape)}, "
                                     f"the parameter {list(params[name].shape)}")
            checked[name] = g.astype(params[name].dtype, copy=False)
        self.optimizer.step(params, checked)
        self._version += 1

    def get_parameters(self, state: bool = False) -> dict[str, np.ndarray]:
        """Copies of the trainable parameters; with state=True also the running statistics (BatchNormalization)."""
        out = {k: v.copy() for k, v in self.autograd.params.items()}
        if state:
            out.update({k: v.copy() for k, v in self.autograd.state.items()})
        return out

    def set_parameters(self, values: dict[str, np.ndarray]) -> None:
        """Overwrites parameters (and running statistics) by name, in place; unknown names are an error."""
        ag = self.autograd
        for name, v in values.items():
            dst = ag.params.get(name, ag.state.get(name))
            if dst is None:
                raise SporelingError(f"{self.source}: no trainable parameter or running statistic '{name}'")
            v = np.asarray(v)
            if v.shape != dst.shape:
                raise SporelingError(f"{self.source}: '{name}' has shape {list(v.shape)}, expected {list(dst.shape)}")
            np.copyto(dst, v, casting="same_kind")
        self._version += 1

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's state as named arrays ("momentum_buffer/conv1.weight", "exp_avg/fc.bias"...), copies."""
        return self.optimizer.state()[0]

    def set_optimizer_state(self, values: dict[str, np.ndarray]) -> None:
        """Overwrites optimizer state arrays by the names get_optimizer_state() gives; the others stay."""
        arrays, meta = self.optimizer.state()
        for key, v in values.items():
            name = key.partition("/")[2]
            if name not in self.autograd.params:
                raise SporelingError(f"{self.source}: optimizer state '{key}' names no trainable parameter")
            if np.shape(v) != self.autograd.params[name].shape:
                raise SporelingError(f"{self.source}: optimizer state '{key}' has shape {list(np.shape(v))}, "
                                     f"the parameter {list(self.autograd.params[name].shape)}")
        self.optimizer.load_state({**arrays, **values}, meta)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.optimizer.lr = value

    # ---- inference form ------------------------------------------------------------------------------
    def inference_graph(self) -> Graph:
        """The model's graph in inference form with the current weights, after the graph passes."""
        from ..passes import optimize

        g = copy.deepcopy(self._graph)
        _untie_identities(g)  # as the training graph did: each parameter and statistic under its own name
        for name, arr in list(self.autograd.params.items()) + list(self.autograd.state.items()):
            old = g.initializers[name]
            g.initializers[name] = arr.astype(old.dtype, copy=True)
        _inference_form(g)
        return optimize(g)

    def inference_model(self):
        from ..model import Model

        if self._eval is None or self._eval[0] != self._version:
            self._eval = (self._version, Model(self.inference_graph(), self.source))
        return self._eval[1]

    def predict(self, feeds) -> np.ndarray:
        """The chosen output in inference form (running statistics, no Dropout)."""
        return self.inference_model().run(self._feeds(feeds))[self.autograd.output]

    def evaluate(self, feeds, labels, batch: int = 256) -> dict[str, float]:
        """Loss and, for class labels, accuracy of the inference form over the whole set, in batches."""
        feeds = self._feeds(feeds)
        labels = np.asarray(labels)
        n = len(labels)
        if n == 0:
            raise ValueError("evaluate needs at least one sample")
        total, correct, classify = 0.0, 0.0, True
        for lo in range(0, n, batch):
            part = {k: v[lo: lo + batch] for k, v in feeds.items()}
            pred = self.predict(part)
            y = labels[lo: lo + batch]
            total += self.loss.value(pred, y) * len(y)
            try:
                correct += accuracy(pred, y) * len(y)
            except ValueError:
                classify = False
        out = {"loss": total / n, "samples": n}
        if classify:
            out["accuracy"] = correct / n
        return out

    def export(self, path: str | os.PathLike, quantize: str | None = None) -> dict:
        """Writes an inference-only .spore: BatchNormalization folded, Dropout removed; quantize="int8" stores
        8-bit per-channel weights (about 4x smaller). Returns {"path", "bytes"}."""
        from ..format import save_spore

        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        path = os.fspath(path)
        graph = self.inference_graph()
        provenance = {"optimized": True, "trained_steps": self.steps}
        if quantize is None:
            save_spore(graph, path, provenance=provenance)
        else:
            from ..quant.compress import compress

            folder = os.path.dirname(os.path.abspath(path))
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                plain = os.path.join(tmp, "float.spore")
                save_spore(graph, plain, provenance=provenance)
                compress(plain, path, method="fixed", bits=8, check=False, verbose=False)
        return {"path": path, "bytes": os.path.getsize(path)}

    # ---- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """Everything the next step depends on, atomically in one file; `extra` (JSON) rides along (data order)."""
        ag = self.autograd
        arrays: dict[str, np.ndarray] = {}
        arrays.update({f"param/{k}": v for k, v in ag.params.items()})
        arrays.update({f"state/{k}": v for k, v in ag.state.items()})
        arrays.update({f"accum/{k}": v for k, v in self._acc.items()})
        opt_arrays, opt_meta = self.optimizer.state()
        arrays.update({f"optim/{k}": v for k, v in opt_arrays.items()})
        meta = {
            "steps": self.steps, "micro": self._micro, "seed": self.seed, "accumulate": self.accumulate,
            "trainable": list(ag.trainable), "output": ag.output, "rng": generator_state(ag.rng),
            "optimizer": opt_meta, "loss": self.loss_spec if isinstance(self.loss_spec, str) else None,
            "source": os.path.basename(self.source), "extra": extra or {}, "precision": self.precision,
            "loss_scale": self.loss_scale, "good_steps": self._good_steps, "skipped_steps": self.skipped_steps,
        }
        write_checkpoint(os.fspath(path), arrays, meta)

    @classmethod
    def load_checkpoint(cls, path: str | os.PathLike, model, loss=None, optimizer: Optimizer | None = None,
                        ) -> Trainer:
        """A Trainer that continues exactly where save_checkpoint left off. The optimizer is rebuilt from the
        checkpoint unless one is given; the loss too when it was named ("cross_entropy"...)."""
        path = os.fspath(path)
        arrays, meta = read_checkpoint(path)
        try:
            loss = loss if loss is not None else meta["loss"]
            if loss is None:
                raise SporelingError(f"{path}: the checkpoint's loss was a custom function: pass loss=")
            t = cls(model, loss=loss, optimizer=optimizer or optimizer_from_config(meta["optimizer"]),
                    seed=meta["seed"], trainable=meta["trainable"] or None, output=meta["output"],
                    accumulate=meta["accumulate"], precision=meta.get("precision", "float32"))
            groups: dict[str, dict[str, np.ndarray]] = {"param": {}, "state": {}, "accum": {}, "optim": {}}
            for key, arr in arrays.items():
                kind, _, name = key.partition("/")
                groups[kind][name] = arr
            missing = set(t.autograd.params) - set(groups["param"])
            if missing:
                raise SporelingError(f"{path}: no value for parameter '{sorted(missing)[0]}' of this model")
            t.set_parameters({**groups["param"], **groups["state"]})
            t.optimizer.load_state(groups["optim"], meta["optimizer"])
            t._acc = {k: v.copy() for k, v in groups["accum"].items()}
            t.steps, t._micro = int(meta["steps"]), int(meta["micro"])
            t.autograd.rng = generator_from_state(meta["rng"])
            t.loss_scale = float(meta.get("loss_scale", t.loss_scale))
            t._good_steps, t.skipped_steps = int(meta.get("good_steps", 0)), int(meta.get("skipped_steps", 0))
            t.extra = meta.get("extra", {})
        except (KeyError, TypeError) as e:
            raise SporelingError(f"{path}: not a sporeling training checkpoint ({type(e).__name__}: {e})") from None
        return t
