"""Optimizer steps of the ai.onnx.preview.training domain: Adagrad, Adam, Momentum.

Each takes the learning rate R and update count T (scalars), then several groups of tensors: the
variables X_1..X_n, their gradients G_1..G_n, and one or two state groups (accumulated squared
gradient H; momentum V). The outputs are the new variables followed by the new states, group by
group, each with its input's shape and dtype, so they are written straight into planned buffers.
The scalar coefficients are computed in float64 and applied in the tensors' dtype.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op

TRAINING = "ai.onnx.preview.training"


def _groups_info(n_groups_in: int, n_groups_out: int):
    """Outputs mirror the first n_groups_out input groups (after R and T)."""

    def info(ins, **_attrs):
        tensors = ins[2:]
        if len(tensors) % n_groups_in or any(i is None or i.shape is None for i in tensors):
            return None
        n = len(tensors) // n_groups_in
        picked = [tensors[g * n + k] for g in [0] + list(range(n_groups_in - n_groups_out + 1, n_groups_in))
                  for k in range(n)]
        return [(i.dtype, i.shape) for i in picked]

    return info


def _split(tensors, n_groups: int) -> list[tuple]:
    n = len(tensors) // n_groups
    return [tuple(tensors[g * n + k] for g in range(n_groups)) for k in range(n)]


def _outputs(out, n_results: int) -> list:
    if out is None:
        return [None] * n_results
    return list(out) if isinstance(out, tuple) else [out] + [None] * (n_results - 1)


def _finish(results: list, out):
    """results: computed arrays in output order; writes them where out has buffers."""
    if out is None:
        return results[0] if len(results) == 1 else tuple(results)
    targets = _outputs(out, len(results))
    for t, r in zip(targets, results):
        if t is not None:
            np.copyto(t, r, casting="unsafe")
    return out


def _scalar(x) -> float:
    return float(np.asarray(x).reshape(-1)[0])


@register_op("Adagrad", since=1, domain=TRAINING, infer=_groups_info(3, 2), out=True)
def adagrad(r, t, *tensors, decay_factor: float = 0.0, epsilon: float = 1e-6, norm_coefficient: float = 0.0,
            out=None):
    rate = _scalar(r) / (1 + _scalar(t) * decay_factor)
    new_x, new_h = [], []
    for x, g, h in _split(tensors, 3):
        dt = x.dtype.type
        g_reg = dt(norm_coefficient) * x + g
        h_new = h + g_reg * g_reg
        new_x.append(x - dt(rate) * g_reg / (np.sqrt(h_new) + dt(epsilon)))
        new_h.append(h_new)
    return _finish(new_x + new_h, out)


@register_op("Momentum", since=1, domain=TRAINING, infer=_groups_info(3, 2), out=True)
def momentum(r, t, *tensors, alpha: float, beta: float, mode: str, norm_coefficient: float, out=None):
    rate = _scalar(r)
    beta_adjusted = beta if _scalar(t) > 0 else 1.0
    new_x, new_v = [], []
    for x, g, v in _split(tensors, 3):
        dt = x.dtype.type
        g_reg = dt(norm_coefficient) * x + g
        v_new = dt(alpha) * v + dt(beta_adjusted) * g_reg
        if mode == "nesterov":
            new_x.append(x - dt(rate) * (g_reg + dt(alpha) * v_new))
        elif mode == "standard":
            new_x.append(x - dt(rate) * v_new)
        else:
            raise ValueError(f"Momentum: unknown mode '{mode}'")
        new_v.append(v_new)
    return _finish(new_x + new_v, out)


@register_op("Adam", since=1, domain=TRAINING, infer=_groups_info(4, 3), out=True)
def adam(r, t, *tensors, alpha: float = 0.9, beta: float = 0.999, epsilon: float = 1e-6,
         norm_coefficient: float = 0.0, norm_coefficient_post: float = 0.0, out=None):
    step = _scalar(t)
    rate = _scalar(r)
    if step > 0:
        rate = rate * np.sqrt(1 - beta**step) / (1 - alpha**step)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in _split(tensors, 4):
        dt = x.dtype.type
        g_reg = dt(norm_coefficient) * x + g
        v_new = dt(alpha) * v + dt(1 - alpha) * g_reg
        h_new = dt(beta) * h + dt(1 - beta) * g_reg * g_reg
        x_new = x - dt(rate) * v_new / (np.sqrt(h_new) + dt(epsilon))
        new_x.append(dt(1 - norm_coefficient_post) * x_new)
        new_v.append(v_new)
        new_h.append(h_new)
    return _finish(new_x + new_v + new_h, out)
