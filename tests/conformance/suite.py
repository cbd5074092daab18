"""Runs the ONNX backend node suite shipped in onnx==1.22.0 through sporeling.

Each case is a one-node (sometimes a few-node) model with input/output protobufs. A case passes
when every output matches the expected one in dtype, shape and value (rtol 1e-3, atol 1e-7, the
suite's own defaults; NaNs must sit in the same places).

    python -m tests.conformance [--ops Add,Conv] [--filter SUBSTR] [--json out.json] [-v]
"""

from __future__ import annotations

import glob
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np

from .exclusions import exclusion_reason

RTOL, ATOL = 1e-3, 1e-7


def suite_dir() -> str | None:
    try:
        import onnx
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    return d if os.path.isdir(d) else None


def case_names() -> list[str]:
    d = suite_dir()
    return sorted(os.listdir(d)) if d else []


@dataclass
class Result:
    name: str
    status: str  # pass | fail | error | unsupported | excluded
    detail: str = ""
    ops: tuple[str, ...] = ()


def _read_value(path: str, type_proto):
    import onnx
    from onnx import numpy_helper

    data = open(path, "rb").read()
    kind = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if kind == "sequence_type":
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if kind == "optional_type":
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def _compare(name: str, got, want) -> str | None:
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{name}: expected a sequence of {len(want)}, got {type(got).__name__}"
        for k, (g, w) in enumerate(zip(got, want)):
            err = _compare(f"{name}[{k}]", g, w)
            if err:
                return err
        return None
    if want is None:
        return None if got is None else f"{name}: expected an empty optional"
    got = np.asarray(got) if not isinstance(got, np.ndarray) else got
    want = np.asarray(want)
    if got.dtype != want.dtype:
        return f"{name}: dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, expected {want.shape}"
    if want.dtype == object or want.dtype.kind in "SU":
        return None if np.array_equal(got, want) else f"{name}: values differ"
    if want.dtype.kind in "biu":
        if np.array_equal(got, want):
            return None
        return f"{name}: {int(np.sum(got != want))} of {want.size} values differ"
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(g64), np.isnan(w64)):
        return f"{name}: NaNs in different places"
    ok = np.isclose(g64, w64, rtol=RTOL, atol=ATOL, equal_nan=True)
    if ok.all():
        return None
    diff = np.abs(np.nan_to_num(g64) - np.nan_to_num(w64))
    return f"{name}: {int((~ok).sum())}/{ok.size} mismatched, max abs diff {diff.max():.3g}"


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_case(name: str, timeout_s: int = 60) -> Result:
    """Runs one case. A case with a written exclusion reason still runs: when it passes it counts as
    a pass; otherwise it is reported as excluded, with the reason."""
    result = _run_case(name, timeout_s)
    reason = exclusion_reason(name)
    if reason and result.status != "pass":
        return Result(name, "excluded", reason, result.ops)
    return result


def _run_case(name: str, timeout_s: int) -> Result:
    import onnx

    import sporeling
    from sporeling.errors import UnsupportedOpError
    from sporeling.frontends.onnx import from_model_proto

    case = os.path.join(suite_dir(), name)
    proto = onnx.load(os.path.join(case, "model.onnx"))
    ops = tuple(sorted({n.op_type for n in proto.graph.node}))
    use_alarm = hasattr(signal, "SIGALRM") and sys.platform != "win32"
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout_s)
    try:
        try:
            model = sporeling.Model(from_model_proto(proto, source=name), name)
        except UnsupportedOpError as e:
            return Result(name, "unsupported", str(e).split(": ", 1)[-1], ops)
        in_types = {v.name: v.type for v in proto.graph.input}
        out_types = {v.name: v.type for v in proto.graph.output}
        for ds in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
            feeds = {}
            for k, v in enumerate(proto.graph.input):
                p = os.path.join(ds, f"input_{k}.pb")
                if os.path.exists(p):
                    feeds[v.name] = _read_value(p, in_types[v.name])
            got = model.run(feeds)
            for k, v in enumerate(proto.graph.output):
                p = os.path.join(ds, f"output_{k}.pb")
                if not os.path.exists(p):
                    continue
                err = _compare(v.name, got.get(v.name), _read_value(p, out_types[v.name]))
                if err:
                    return Result(name, "fail", err, ops)
        return Result(name, "pass", "", ops)
    except _Timeout:
        return Result(name, "error", f"timed out after {timeout_s}s", ops)
    except Exception as e:
        return Result(name, "error", f"{type(e).__name__}: {str(e)[:300]}", ops)
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


def run_all(names: list[str] | None = None, ops: set[str] | None = None, verbose: bool = False) -> list[Result]:
    import onnx

    results = []
    for name in names or case_names():
        if ops:
            proto = onnx.load(os.path.join(suite_dir(), name, "model.onnx"), load_external_data=False)
            if not ops & {n.op_type for n in proto.graph.node}:
                continue
        r = run_case(name)
        results.append(r)
        if verbose and r.status not in ("pass", "excluded"):
            print(f"{r.status:12s} {name}: {r.detail}", flush=True)
    return results


def summarize(results: list[Result]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = ["pass", "fail", "error", "unsupported", "excluded"]
    return f"{len(results)} cases: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in order)
