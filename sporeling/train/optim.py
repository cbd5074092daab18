"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules (StepLR, CosineLR) for training on the device.

An optimizer updates named parameter arrays in place from named gradient arrays, with the formulas of
PyTorch's single-tensor path (torch.optim.SGD/Adam/AdamW, foreach=False), so 20 steps here give PyTorch's
weights. PyTorch's CPU kernels compute `x.add(y, alpha=a)`, `lerp_` and `addcmul_` as fused multiply-adds
(one rounding). NumPy has no FMA, so with exact=True the fused products of float32 (and
float16) parameters are formed in float64 scratch, where the product of two float32 numbers is exact, and
rounded once on the way back. That makes SGD bit-identical to PyTorch; Adam differs only where PyTorch's
sqrt (MKL's, within about 0.75 ulp) is not correctly rounded, by an ulp now and then. exact=False (the default)
rounds twice (a float32 multiply, then an add): about 1e-7 relative from PyTorch after 20 steps, and 2-5x
faster, which matters in the training step; exact=True is there to reproduce PyTorch bit for bit.
float64 parameters always take two roundings (a last-bit difference from the fused one, rarely).

This is the training hot loop (MobileNetV2 updates 3.5M numbers per step), so updates run as NumPy ufuncs
with `out=`, into per-parameter state (created on a parameter's first update, in its dtype) and small
scratch buffers shared by all parameters: each parameter is updated in flat chunks of 32K elements, all its
ops on one chunk while it is in cache, so a step allocates no arrays and reads each array about once. A
parameter without a gradient (missing, or None) is skipped that step, as PyTorch skips one whose .grad is
None; Adam's bias correction counts each parameter's own updates.

A schedule multiplies the base learning rate by a factor of the optimizer's step count (schedules are per
optimizer step, not per epoch). state()/load_state() give the optimizer as named arrays plus JSON-able meta,
so a checkpoint restored mid-run continues bit-identically; optimizer_from_config() rebuilds an optimizer
from that meta.
"""

from __future__ import annotations

import math

import numpy as np


def _finite(name: str, value, lo: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < lo:
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number >= {lo:g})")
    return v


# ---------------------------------------------------------------- schedules


class Schedule:
    """Maps (base learning rate, optimizer steps taken) to the rate of the next step."""

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr * self.factor(step)

    def config(self) -> dict:
        raise NotImplementedError


class StepLR(Schedule):
    """gamma ** (steps // step_size): torch.optim.lr_scheduler.StepLR stepped once per optimizer step."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"StepLR step_size must be a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _finite("StepLR gamma", gamma)

    def factor(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)

    def config(self) -> dict:
        return {"type": "StepLR", "step_size": self.step_size, "gamma": self.gamma}


class CosineLR(Schedule):
    """Linear warmup over `warmup` steps ((s+1)/warmup), then a half cosine from 1 to min_factor over the rest
    of total_steps, as torch's CosineAnnealingLR(T_max=total_steps - warmup, eta_min=min_factor*lr). After
    total_steps it stays at min_factor (torch's would rise again, which no training run wants)."""

    def __init__(self, total_steps: int, min_factor: float = 0.0, warmup: int = 0):
        for name, v in (("total_steps", total_steps), ("warmup", warmup)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"CosineLR {name} must be a non-negative int, got {v!r}")
        if warmup >= total_steps:
            raise ValueError(f"CosineLR needs warmup < total_steps, got warmup={warmup}, total_steps={total_steps}")
        self.total_steps, self.warmup = int(total_steps), int(warmup)
        self.min_factor = _finite("CosineLR min_factor", min_factor)
        if self.min_factor > 1:
            raise ValueError(f"CosineLR min_factor must be in [0, 1], got {min_factor!r}")

    def lr_at(self, base_lr: float, step: int) -> float:
        if step < self.warmup:
            return base_lr * (step + 1) / self.warmup
        span = self.total_steps - self.warmup
        t = min(step - self.warmup, span)
        eta_min = self.min_factor * base_lr
        # the same expression as torch's closed form, so the rates agree to the last bit or two
        return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / span)) / 2

    def factor(self, step: int) -> float:
        return self.lr_at(1.0, step)

    def config(self) -> dict:
        return {"type": "CosineLR", "total_steps": self.total_steps, "min_factor": self.min_factor,
                "warmup": self.warmup}


_SCHEDULES = {"StepLR": StepLR, "CosineLR": CosineLR}


def schedule_from_config(cfg: dict | None) -> Schedule | None:
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or cfg.get("type") not in _SCHEDULES:
        raise ValueError(f"unknown schedule {cfg!r}; known types: {', '.join(_SCHEDULES)}")
    try:
        return _SCHEDULES[cfg["type"]](**{k: v for k, v in cfg.items() if k != "type"})
    except TypeError as e:
        raise ValueError(f"bad schedule config {cfg!r}: {e}") from None


# ---------------------------------------------------------------- scratch and the fused multiply-add

# Elements per pass: a chunk's float64 scratch (256 KiB) and its companions stay in cache, which halves the
# cost of the float64 round trips against whole-array passes; smaller chunks pay more in per-call overhead.
_CHUNK = 1 << 15


class _Scratch:
    """Buffers of _CHUNK elements, one per (slot, dtype), shared by all parameters and chunks. A parameter
    that is no contiguous array (so cannot be cut into flat chunks) gets them at its whole shape."""

    def __init__(self):
        self._bufs: dict[tuple[str, np.dtype], np.ndarray] = {}
        self.shape: tuple[int, ...] = (0,)

    def __call__(self, slot: str, dtype) -> np.ndarray:
        key = (slot, np.dtype(dtype))
        size = math.prod(self.shape)
        buf = self._bufs.get(key)
        if buf is None or buf.size < size:
            buf = self._bufs[key] = np.empty(max(size, _CHUNK), key[1])
        return buf[:size] if len(self.shape) == 1 else buf[:size].reshape(self.shape)


# Adam's square root; a name of its own so a test can put PyTorch's (not correctly rounded) one in its place
_sqrt = np.sqrt


# ---------------------------------------------------------------- optimizers


class Optimizer:
    """Base: learning rate and schedule, the step loop, state as named arrays. Subclasses give _STATE (the
    kinds of per-parameter arrays), _configure(**hyperparameters), config(), _prepare() (a parameter's state
    arrays and scalar coefficients, once per step) and _kernel() (the update of one chunk)."""

    _STATE: tuple[str, ...] = ()

    def __init__(self, lr: float, schedule: Schedule | None, exact: bool):
        self.exact = bool(exact)
        self.lr = lr
        self.schedule = schedule
        self.steps = 0
        self._state: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in self._STATE}
        self._param_steps: dict[str, int] = {}
        self._scratch = _Scratch()

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _finite("learning rate", value)

    @property
    def schedule(self) -> Schedule | None:
        return self._schedule

    @schedule.setter
    def schedule(self, value: Schedule | None) -> None:
        if value is not None and not isinstance(value, Schedule):
            raise ValueError(f"schedule must be a Schedule (StepLR, CosineLR) or None, got {type(value).__name__}")
        self._schedule = value

    def current_lr(self) -> float:
        return self._lr if self._schedule is None else self._schedule.lr_at(self._lr, self.steps)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray | None]) -> None:
        """One update of `params` in place from `grads`; names missing from grads (or None) are skipped.
        Everything is checked before anything is updated, so a bad call leaves the parameters as they were."""
        todo = []
        for name, g in grads.items():
            if g is None:
                continue
            p = params.get(name)
            if p is None:
                raise ValueError(f"gradient for unknown parameter {name!r}")
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.writeable:
                raise ValueError(f"parameter {name!r} must be a writeable float ndarray to update in place")
            if getattr(g, "shape", None) != p.shape:
                raise ValueError(f"gradient for {name!r} has shape {getattr(g, 'shape', None)}, "
                                 f"parameter has {p.shape}")
            for kind, per in self._state.items():
                if name in per and per[name].shape != p.shape:
                    raise ValueError(f"optimizer state {kind}/{name} has shape {per[name].shape}, "
                                     f"parameter has {p.shape}")
            todo.append((name, p, g if g.dtype == p.dtype else np.asarray(g, dtype=p.dtype)))
        lr = self.current_lr()
        for name, p, g in todo:
            t = self._param_steps.get(name, 0) + 1
            state, coef = self._prepare(name, p, lr, t)
            if p.flags.c_contiguous:  # state arrays always are: we make them
                flat = [p.reshape(-1), g.reshape(-1), *(a.reshape(-1) for a in state)]
                for start in range(0, p.size, _CHUNK):
                    chunk = [a[start:start + _CHUNK] for a in flat]
                    self._scratch.shape = chunk[0].shape
                    self._kernel(chunk[0], chunk[1], chunk[2:], coef)
            else:
                self._scratch.shape = p.shape
                self._kernel(p, g, state, coef)
            self._param_steps[name] = t
        self.steps += 1

    def _fma(self, a: np.ndarray, b, c: np.ndarray, out: np.ndarray) -> None:
        """out = a * b + c (b: a scalar of out's dtype, or an array; out may be a, b or c). Exact: rounded once,
        as PyTorch's fused CPU kernels, through float64 where the product of two float32 is exact (casting into
        float64 buffers first is faster than mixed-dtype ufuncs). Otherwise two roundings, 3.5x cheaper."""
        scratch = self._scratch
        if not self.exact:
            prod = scratch("prod", out.dtype)
            np.multiply(a, b, out=prod)
            np.add(prod, c, out=out)
            return
        wide, wide2 = scratch("wide", np.float64), scratch("wide2", np.float64)
        np.copyto(wide, a)
        if isinstance(b, np.ndarray):
            np.copyto(wide2, b)
            b = wide2
        np.multiply(wide, b, out=wide)
        np.copyto(wide2, c)
        np.add(wide, wide2, out=wide)
        np.copyto(out, wide, casting="same_kind")

    def _prepare(self, name: str, p: np.ndarray, lr: float, t: int) -> tuple[list[np.ndarray], tuple]:
        raise NotImplementedError

    def _kernel(self, p: np.ndarray, g: np.ndarray, state: list[np.ndarray], coef: tuple) -> None:
        raise NotImplementedError

    def _buffer(self, kind: str, name: str, p: np.ndarray) -> tuple[np.ndarray, bool]:
        """The state array `kind` of parameter `name` (zeros when new) and whether it is new."""
        a = self._state[kind].get(name)
        if a is not None:
            return a, False
        a = self._state[kind][name] = np.zeros(p.shape, p.dtype)
        return a, True

    def config(self) -> dict:
        raise NotImplementedError

    def _configure(self, **hyper) -> None:
        raise NotImplementedError

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, meta): copies of the state arrays named "kind/param", and JSON-able meta (type, config,
        steps, base lr, each parameter's update count)."""
        arrays = {f"{kind}/{name}": a.copy() for kind, per in self._state.items() for name, a in per.items()}
        meta = {"type": type(self).__name__, "config": self.config(), "steps": self.steps, "lr": self._lr,
                "param_steps": dict(self._param_steps)}
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore what state() gave, hyperparameters included (as torch's load_state_dict restores its
        param_groups). All is checked before anything changes."""
        if not isinstance(meta, dict):
            raise ValueError(f"optimizer state meta must be a dict, got {type(meta).__name__}")
        if meta.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {meta.get('type')}, not {type(self).__name__}")
        fresh = optimizer_from_config(meta)  # checks the hyperparameters and the schedule
        lr = _finite("learning rate", meta.get("lr", fresh.lr))
        steps = meta.get("steps", 0)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"optimizer state: steps must be a non-negative int, got {steps!r}")
        param_steps = meta.get("param_steps", {})
        if not isinstance(param_steps, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in param_steps.values()):
            raise ValueError("optimizer state: param_steps must map parameter names to non-negative ints")
        state: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in fresh._STATE}
        for key, a in arrays.items():
            kind, _, name = key.partition("/")
            if kind not in state or not name:
                raise ValueError(f"optimizer state array {key!r}: this {type(self).__name__} keeps "
                                 f"{', '.join(k + '/<param>' for k in fresh._STATE) or 'no arrays'}")
            a = np.asarray(a)
            if a.dtype.kind != "f":
                raise ValueError(f"optimizer state array {key!r} must be float, got {a.dtype}")
            state[kind][name] = np.array(a, order="C")  # our own copy: the caller's arrays stay theirs
        for k, v in vars(fresh).items():
            if not k.startswith("_"):  # the hyperparameters
                setattr(self, k, v)
        self.schedule, self.lr = fresh.schedule, lr
        self.steps, self._param_steps, self._state = steps, dict(param_steps), state


class SGD(Optimizer):
    """torch.optim.SGD: L2 weight decay added to the gradient, momentum buffer = first gradient, then
    buf = momentum*buf + (1-dampening)*g; Nesterov uses g + momentum*buf."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule: Schedule | None = None, exact: bool = False):
        self._configure(momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(lr, schedule, exact)

    @property
    def _STATE(self):  # the momentum buffer exists only with momentum, as in torch
        return ("momentum_buffer",) if self.momentum else ()

    def _configure(self, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0) -> None:
        momentum = _finite("momentum value", momentum)
        dampening = _finite("dampening value", dampening, lo=-math.inf)
        weight_decay = _finite("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening, self.weight_decay = momentum, dampening, weight_decay
        self.nesterov = bool(nesterov)

    def config(self) -> dict:
        return {"lr": self._lr, "momentum": self.momentum, "dampening": self.dampening, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "exact": self.exact,
                "schedule": None if self._schedule is None else self._schedule.config()}

    def _prepare(self, name, p, lr, t):
        dt = p.dtype.type
        state, first = [], False
        if self.momentum != 0:
            buf, first = self._buffer("momentum_buffer", name, p)
            state = [buf]
        return state, (dt(self.weight_decay), dt(self.momentum), dt(1 - self.dampening), dt(-lr), first)

    def _kernel(self, p, g, state, coef):
        weight_decay, momentum, keep, neg_lr, first = coef
        d = g
        if self.weight_decay != 0:
            d = self._scratch("grad", p.dtype)
            self._fma(p, weight_decay, g, d)
        if self.momentum != 0:
            buf = state[0]
            if first:  # torch starts the buffer as the first gradient, undamped
                np.copyto(buf, d)
            else:
                np.multiply(buf, momentum, out=buf)
                self._fma(d, keep, buf, buf)
            if self.nesterov:
                out = self._scratch("grad", p.dtype)
                self._fma(buf, momentum, d, out)
                d = out
            else:
                d = buf
        self._fma(d, neg_lr, p, p)


class Adam(Optimizer):
    """torch.optim.Adam: m = lerp(m, g, 1-beta1); v = beta2*v + (1-beta2)*g*g; with amsgrad the running max
    of v; p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps). Weight decay is L2 (added to g)."""

    _STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _DECOUPLED = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, schedule: Schedule | None = None,
                 exact: bool = False):
        self._configure(betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(lr, schedule, exact)

    def _configure(self, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = (_finite(f"beta parameter at index {i}", b) for i, b in enumerate(betas))
        for i, b in enumerate((b1, b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b} (must be in [0, 1))")
        self.betas = (b1, b2)
        self.eps = _finite("epsilon value", eps)
        self.weight_decay = _finite("weight_decay value", weight_decay)
        self.amsgrad = bool(amsgrad)

    def config(self) -> dict:
        return {"lr": self._lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": self.amsgrad, "exact": self.exact,
                "schedule": None if self._schedule is None else self._schedule.config()}

    def _prepare(self, name, p, lr, t):
        dt = p.dtype.type
        beta1, beta2 = self.betas
        kinds = self._STATE if self.amsgrad else self._STATE[:2]
        state = [self._buffer(kind, name, p)[0] for kind in kinds]
        decay = dt(1 - lr * self.weight_decay) if self._DECOUPLED else dt(self.weight_decay)
        w = dt(1 - beta1)
        # Python floats, as torch computes them, rounded to the parameter's dtype where its kernels take them
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = lr / bias_correction1
        return state, (decay, w, w - dt(1), dt(beta2), dt(1 - beta2), dt(bias_correction2**0.5), dt(self.eps),
                       dt(-step_size))

    def _kernel(self, p, g, state, coef):
        decay, w, w_minus_1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step = coef
        m, v = state[0], state[1]
        tmp = self._scratch("tmp", p.dtype)
        d = g
        if self.weight_decay != 0:
            if self._DECOUPLED:
                np.multiply(p, decay, out=p)
            else:
                d = self._scratch("grad", p.dtype)
                self._fma(p, decay, g, d)
        # m.lerp_(d, w): torch picks the form by the weight's size, for accuracy
        np.subtract(d, m, out=tmp)
        if abs(w) < 0.5:
            self._fma(tmp, w, m, m)
        else:
            self._fma(tmp, w_minus_1, d, m)
        # v.mul_(beta2).addcmul_(d, d, value=1-beta2), fused as (value*d)*d + v
        np.multiply(v, beta2, out=v)
        np.multiply(d, one_minus_beta2, out=tmp)
        self._fma(tmp, d, v, v)
        if self.amsgrad:
            np.maximum(state[2], v, out=state[2])
            v = state[2]
        denom = self._scratch("denom", p.dtype)
        _sqrt(v, out=denom)
        np.divide(denom, bias_correction2_sqrt, out=denom)
        np.add(denom, eps, out=denom)
        # p.addcdiv_(m, denom, value=-step_size) is p + (value*m)/denom: no fusing across the division
        np.multiply(m, neg_step, out=tmp)
        np.divide(tmp, denom, out=tmp)
        np.add(p, tmp, out=p)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, p *= 1 - lr*weight_decay before the update."""

    _DECOUPLED = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False, schedule: Schedule | None = None,
                 exact: bool = False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, schedule, exact)


_OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def optimizer_from_config(meta: dict) -> Optimizer:
    """A fresh optimizer of meta's type and config (state()[1] will do); load_state() restores the rest."""
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer type {kind!r}; known types: {', '.join(_OPTIMIZERS)}")
    cfg = dict(meta.get("config") or {})
    if not isinstance(cfg.get("schedule"), (dict, type(None))):
        raise ValueError(f"optimizer config: schedule must be a dict or None, got {cfg['schedule']!r}")
    cfg["schedule"] = schedule_from_config(cfg.get("schedule"))
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    try:
        return _OPTIMIZERS[kind](**cfg)
    except TypeError as e:
        raise ValueError(f"bad {kind} config {meta.get('config')!r}: {e}") from None
