"""ai.onnx.ml TreeEnsemble (ml opset 5).

Every sample walks every tree at once: the state is one position per (sample, tree), where a
position >= 0 is an interior node and -(leaf + 1) is a leaf. Each pass evaluates the comparison of
all still-interior positions in one vectorised step and moves them to their true or false child, so
the number of passes is the depth of the deepest tree. A NaN feature takes the true branch when
nodes_missing_value_tracks_true says so, else whatever the comparison gives (false, except for NEQ).
BRANCH_MEMBER sets are padded with NaN into one [member nodes, largest set] table.

Leaf weights are then aggregated per (sample, target) (SUM, AVERAGE over trees, MIN, MAX; targets
that no leaf reaches are 0) and post-transformed with the spec's codes: 1 SOFTMAX, 2 LOGISTIC,
3 SOFTMAX_ZERO (zeros stay zero, an all-zero row stays zero), 4 PROBIT. onnxruntime 1.32 reads 1 as
LOGISTIC and 2 as SOFTMAX and applies neither to a single target; sporeling follows the spec. The
ensemble tables are built once per plan.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op

ML = "ai.onnx.ml"
LEQ, LT, GTE, GT, EQ, NEQ, MEMBER = range(7)
SUM_AGG, AVERAGE_AGG, MIN_AGG, MAX_AGG = 1, 0, 2, 3


def _tree_info(ins, *, n_targets: int = 1, **_attrs):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    return [(x.dtype, (x.shape[0], n_targets))]


def _member_table(modes: np.ndarray, membership_values) -> tuple[np.ndarray, np.ndarray]:
    """Per node, its row in the membership table (-1 if not a member node), and the table."""
    row_of = np.full(len(modes), -1, np.int64)
    member_nodes = np.flatnonzero(modes == MEMBER)
    row_of[member_nodes] = np.arange(len(member_nodes))
    values = np.asarray(membership_values if membership_values is not None else [], np.float64).reshape(-1)
    if len(member_nodes) == 0:
        return row_of, np.full((0, 1), np.nan)
    cuts = np.flatnonzero(np.isnan(values))
    sets = np.split(values, cuts)
    sets = [s[~np.isnan(s)] for s in sets][: len(member_nodes)]
    sets += [np.zeros(0)] * (len(member_nodes) - len(sets))
    table = np.full((len(member_nodes), max(1, max(len(s) for s in sets))), np.nan)
    for k, s in enumerate(sets):
        table[k, : len(s)] = s
    return row_of, table


def _post_transform(scores: np.ndarray, kind: int) -> np.ndarray:
    if kind == 0:
        return scores
    if kind == 1:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == 2:
        return 1.0 / (1.0 + np.exp(-scores))
    if kind == 3:  # softmax over the non-zero scores; zeros stay zero
        nonzero = scores != 0
        shifted = np.where(nonzero, scores - np.where(nonzero, scores, -np.inf).max(axis=1, keepdims=True), 0)
        e = np.where(nonzero, np.exp(shifted), 0)
        total = e.sum(axis=1, keepdims=True)
        return np.where(total > 0, e / np.where(total > 0, total, 1), 0)
    if kind == 4:  # probit: sqrt(2) * erfinv(2p - 1), with Winitzki's closed-form erfinv (a = 0.147)
        y = 2 * scores - 1
        with np.errstate(divide="ignore", invalid="ignore"):  # p outside (0, 1) gives +-inf / NaN
            ln = np.log((1 - y) * (1 + y))
            t = 2 / (np.pi * 0.147) + ln / 2
            return np.sqrt(2) * np.sign(y) * np.sqrt(np.sqrt(t * t - ln / 0.147) - t)
    raise ValueError(f"TreeEnsemble: unknown post_transform {kind}")


def _make_tree_ensemble(ins, *, tree_roots, nodes_modes, nodes_featureids, nodes_splits, nodes_truenodeids,
                        nodes_trueleafs, nodes_falsenodeids, nodes_falseleafs, leaf_targetids, leaf_weights,
                        n_targets: int = 1, aggregate_function: int = 1, post_transform: int = 0,
                        nodes_missing_value_tracks_true=None, membership_values=None, nodes_hitrates=None):
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    feature = np.asarray(nodes_featureids, np.int64)
    splits = np.asarray(nodes_splits).reshape(-1)
    # next position for each outcome: a node index, or -(leaf + 1) for a leaf
    true_next = np.where(np.asarray(nodes_trueleafs, bool), -np.asarray(nodes_truenodeids, np.int64) - 1,
                         np.asarray(nodes_truenodeids, np.int64))
    false_next = np.where(np.asarray(nodes_falseleafs, bool), -np.asarray(nodes_falsenodeids, np.int64) - 1,
                          np.asarray(nodes_falsenodeids, np.int64))
    missing_true = np.zeros(len(modes), bool)
    if nodes_missing_value_tracks_true:
        missing_true = np.asarray(nodes_missing_value_tracks_true, bool)
    member_row, member_table = _member_table(modes, membership_values)
    roots = np.asarray(tree_roots, np.int64)
    targets = np.asarray(leaf_targetids, np.int64)
    weights = np.asarray(leaf_weights).reshape(-1).astype(np.float64)

    def run(x, out=None):
        n = x.shape[0]
        pos = np.broadcast_to(roots, (n, len(roots))).copy()
        sample = np.broadcast_to(np.arange(n)[:, None], pos.shape)
        active = np.flatnonzero(pos.ravel() >= 0)
        flat_pos, flat_sample = pos.ravel(), sample.ravel()
        while active.size:
            node = flat_pos[active]
            v = x[flat_sample[active], feature[node]]
            s = splits[node]
            m = modes[node]
            cond = np.select(
                [m == LEQ, m == LT, m == GTE, m == GT, m == EQ, m == NEQ],
                [v <= s, v < s, v >= s, v > s, v == s, v != s],
                default=False,
            )
            is_member = m == MEMBER
            if is_member.any():
                rows = member_table[member_row[node[is_member]]]
                cond[is_member] = (rows == v[is_member, None].astype(np.float64)).any(axis=1)
            cond |= np.isnan(v) & missing_true[node]
            flat_pos[active] = np.where(cond, true_next[node], false_next[node])
            active = active[flat_pos[active] >= 0]
        leaf = -flat_pos - 1
        cell = flat_sample * n_targets + targets[leaf]
        if aggregate_function in (SUM_AGG, AVERAGE_AGG):
            scores = np.bincount(cell, weights=weights[leaf], minlength=n * n_targets)
            if aggregate_function == AVERAGE_AGG:
                scores /= len(roots)
        elif aggregate_function in (MIN_AGG, MAX_AGG):
            start = np.inf if aggregate_function == MIN_AGG else -np.inf
            scores = np.full(n * n_targets, start)
            (np.minimum if aggregate_function == MIN_AGG else np.maximum).at(scores, cell, weights[leaf])
            scores[np.isinf(scores) & (scores == start)] = 0
        else:
            raise ValueError(f"TreeEnsemble: unknown aggregate_function {aggregate_function}")
        result = _post_transform(scores.reshape(n, n_targets), post_transform)
        if out is None:
            return result.astype(x.dtype)
        np.copyto(out, result, casting="unsafe")
        return out

    return run


@register_op("TreeEnsemble", since=5, domain=ML, infer=_tree_info, out=True, make=_make_tree_ensemble)
def tree_ensemble(x, *, out=None, **attrs):
    return _make_tree_ensemble(None, **attrs)(x, out=out)
