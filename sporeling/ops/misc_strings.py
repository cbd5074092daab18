"""String ops: StringConcat, StringNormalizer, StringSplit, RegexFullMatch, TfIdfVectorizer.

Strings are NumPy object arrays of Python str. NumPy has no vectorised kernels for such arrays, so
per-string work (splitting, regex matching) runs in Python over the flattened array; everything
around it (padding, counting, scattering) is array code. String results are never placed in the
arena (an object array cannot live in raw memory), so these ops return fresh arrays; StringConcat
and RegexFullMatch still give infer functions so that later ops see their shapes.
"""

from __future__ import annotations

import re

import numpy as np

from .infer import broadcast, known
from .registry import register_op

# ---- StringConcat / RegexFullMatch -------------------------------------------------------------


def _concat_info(ins, **_attrs):
    if not known(*ins):
        return None
    return [(np.dtype(object), broadcast(ins[0].shape, ins[1].shape))]


@register_op("StringConcat", since=20, infer=_concat_info)
def string_concat(x, y):
    joined = np.add(x.astype(object, copy=False), y.astype(object, copy=False), dtype=object)
    return np.asarray(joined, dtype=object)  # 0-d inputs give a bare str


def _regex_info(ins, **_attrs):
    x = ins[0]
    return None if x is None or x.shape is None else [(np.dtype(bool), x.shape)]


@register_op("RegexFullMatch", since=20, infer=_regex_info, out=True)
def regex_full_match(x, *, pattern: str, out=None):
    compiled = re.compile(pattern)
    flags = np.fromiter((compiled.fullmatch(s) is not None for s in x.ravel()), bool, count=x.size)
    if out is None:
        return flags.reshape(x.shape)
    out[...] = flags.reshape(x.shape)
    return out


# ---- StringNormalizer ------------------------------------------------------------------------------


@register_op("StringNormalizer", since=10)
def string_normalizer(x, *, case_change_action: str = "NONE", is_case_sensitive: int = 0, locale: str = "",
                      stopwords=None):
    """x is [C] or [1, C]. Stopwords are removed first (compared lower-cased unless
    is_case_sensitive), then the case is changed. If nothing is left the result is one empty
    string. Case mapping is Python's full Unicode mapping, as in the ONNX reference ('ß'.upper() is
    'SS'; onnxruntime maps character by character and keeps 'ß'); the locale is not consulted."""
    flat = x.reshape(-1)
    if stopwords:
        if is_case_sensitive:
            drop = np.isin(flat, np.array(stopwords, object))
        else:
            folded = np.array([s.lower() for s in flat], object)
            drop = np.isin(folded, np.array([w.lower() for w in stopwords], object))
        flat = flat[~drop]
    if case_change_action == "LOWER":
        flat = np.array([s.lower() for s in flat], object)
    elif case_change_action == "UPPER":
        flat = np.array([s.upper() for s in flat], object)
    elif case_change_action != "NONE":
        raise ValueError(f"StringNormalizer: unknown case_change_action '{case_change_action}'")
    if flat.size == 0:
        flat = np.array([""], object)
    result = np.array(flat, object)
    return result.reshape(1, -1) if x.ndim == 2 else result


# ---- StringSplit ---------------------------------------------------------------------------------


@register_op("StringSplit", since=20)
def string_split(x, *, delimiter: str = "", maxsplit=None):
    """Splits every string; an empty delimiter splits on runs of whitespace. Returns the substrings
    padded with "" to the longest split ([*x.shape, max_count]) and the count per string."""
    sep = delimiter or None
    limit = -1 if maxsplit is None else int(maxsplit)
    parts = [s.split(sep, limit) for s in x.ravel()]
    counts = np.fromiter((len(p) for p in parts), np.int64, count=len(parts))
    width = int(counts.max()) if counts.size else 0
    subs = np.full((len(parts), width), "", object)
    flat_parts = [s for p in parts for s in p]
    if flat_parts:  # scatter the ragged pieces: row = which string, column = position in its split
        rows = np.repeat(np.arange(len(parts)), counts)
        cols = np.arange(len(flat_parts)) - np.repeat(np.cumsum(counts) - counts, counts)
        subs[rows, cols] = np.array(flat_parts, object)
    return subs.reshape(*x.shape, width), counts.reshape(x.shape)


# ---- TfIdfVectorizer -----------------------------------------------------------------------------


def _tfidf_width(ngram_indexes) -> int:
    return int(max(ngram_indexes)) + 1 if len(ngram_indexes) else 0


def _tfidf_info(ins, *, ngram_indexes, **_attrs):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    width = _tfidf_width(ngram_indexes)
    return [(np.dtype(np.float32), (width,) if len(x.shape) == 1 else (x.shape[0], width))]


def _ngram_ordinal(ngram_counts, n: int) -> int:
    """Ordinal (in ngram_indexes) of the first n-gram: n-grams are numbered across the pool in
    order, each k-gram taking k pool slots."""
    ordinal = 0
    for k in range(1, n):
        start = ngram_counts[k - 1]
        end = ngram_counts[k] if k < len(ngram_counts) else start
        ordinal += (end - start) // k
    return ordinal


@register_op("TfIdfVectorizer", since=9, infer=_tfidf_info, out=True)
def tfidf_vectorizer(x, *, max_gram_length: int, max_skip_count: int, min_gram_length: int, mode: str,
                     ngram_counts, ngram_indexes, pool_int64s=None, pool_strings=None, weights=None, out=None):
    """Counts the pool's n-grams in each row. Tokens are first replaced by their rank in the pool's
    vocabulary (-1 when absent), so an n-gram of ranks becomes one integer key (a number in base
    vocabulary size + 1) that is matched against the pool's keys with a sorted search. For each n
    and skip, the windows of all rows are gathered with one fancy index."""
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    n_rows, length = rows.shape
    pool = np.array(pool_strings, object) if pool_strings is not None else np.array(pool_int64s or [], np.int64)
    vocab = np.unique(pool)
    base = len(vocab) + 1
    pos = np.searchsorted(vocab, rows.ravel()) if len(vocab) else np.zeros(rows.size, np.int64)
    pos = np.minimum(pos, max(len(vocab) - 1, 0))
    found = vocab[pos] == rows.ravel() if len(vocab) else np.zeros(rows.size, bool)
    ranks = np.where(found, pos, -1).reshape(rows.shape)
    pool_ranks = np.searchsorted(vocab, pool) if len(vocab) else np.zeros(0, np.int64)
    if base ** max(max_gram_length, 1) >= 2**62:
        raise ValueError("TfIdfVectorizer: vocabulary too large for the n-gram length")
    width = _tfidf_width(ngram_indexes)
    n_pool = len(ngram_indexes)
    counts = np.zeros((n_rows, n_pool), np.float64)
    for n in range(max(min_gram_length, 1), max_gram_length + 1):
        start = ngram_counts[n - 1] if n - 1 < len(ngram_counts) else len(pool)
        end = ngram_counts[n] if n < len(ngram_counts) else len(pool)
        grams = pool_ranks[start:end].reshape(-1, n)
        if grams.size == 0:
            continue
        first = _ngram_ordinal(ngram_counts, n)
        weights_base = base ** np.arange(n, dtype=np.int64)
        pool_keys = (grams + 1) @ weights_base
        order = np.argsort(pool_keys, kind="stable")
        sorted_keys = pool_keys[order]
        for skip in range(1 if n == 1 else max_skip_count + 1):  # a 1-gram has no skips
            step = skip + 1
            n_windows = length - (n - 1) * step
            if n_windows <= 0:
                break
            idx = np.arange(n_windows)[:, None] + np.arange(n)[None, :] * step
            windows = ranks[:, idx]  # [rows, windows, n]
            valid = (windows >= 0).all(axis=-1)
            keys = (windows + 1) @ weights_base
            at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
            hit = valid & (sorted_keys[at] == keys)
            gram = first + order[at]
            r = np.broadcast_to(np.arange(n_rows)[:, None], hit.shape)
            np.add.at(counts, (r[hit], gram[hit]), 1)
    w = np.ones(n_pool) if not weights else np.asarray(weights, np.float64)
    if mode == "TF":
        scores = counts
    elif mode == "IDF":
        scores = np.minimum(counts, 1) * w
    elif mode == "TFIDF":
        scores = counts * w
    else:
        raise ValueError(f"TfIdfVectorizer: unknown mode '{mode}'")
    result = np.zeros((n_rows, width), np.float32)
    result[:, np.asarray(ngram_indexes, np.int64)] = scores
    result = result[0] if x.ndim == 1 else result
    if out is None:
        return result
    np.copyto(out, result)
    return out
