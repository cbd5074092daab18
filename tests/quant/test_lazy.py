"""Lazy mode (sporeling.load(path, lazy=True)): quantized weights stay encoded until the node that reads them runs.

A small float model (a Winograd-sized 3x3 Conv, a float16 weight Cast to float32, a Gemm with transB and
alpha, so that eager binding transposes and scales its weight) is compressed with the fixed 8-bit method;
eager and lazy loads of the same file must give bit-identical outputs, and after a run nothing the lazy model
holds may be a decoded float weight or a re-laid-out copy of one (the eager model, checked the same way,
holds both). With the real assets, compressed PP-OCRv4 det and MediaPipe face landmark must agree bit for bit.
"""

from __future__ import annotations

import gc
import types

import numpy as np
import pytest

import sporeling
from sporeling.format import Encoded, SporeFormatError, read_info, save_spore
from sporeling.ir import Graph, Node, ValueInfo
from sporeling.quant.encode import encode, quantize_tensor
from sporeling.runtime.lazy import LazySession, LazyTensor
from sporeling.runtime.session import Session
from sporeling.tools import random_feeds

from ..assets import require

rng = np.random.default_rng(7)


def float_graph() -> Graph:
    w1 = (rng.standard_normal((32, 16, 3, 3)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((48, 32, 1, 1)) * 0.2).astype(np.float16)
    w3 = (rng.standard_normal((10, 48 * 16 * 16)) * 0.02).astype(np.float32)
    inits = {"w1": w1, "b1": rng.standard_normal(32).astype(np.float32), "w2h": w2, "w3": w3,
             "b3": rng.standard_normal(10).astype(np.float32)}
    nodes = [Node("Conv", ["x", "w1", "b1"], ["c1"], {"pads": [1, 1, 1, 1]}), Node("Relu", ["c1"], ["r1"]),
             Node("Cast", ["w2h"], ["w2"], {"to": 1}), Node("Conv", ["r1", "w2"], ["c2"]),
             Node("Flatten", ["c2"], ["f"]), Node("Gemm", ["f", "w3", "b3"], ["y"], {"transB": 1, "alpha": 0.5})]
    return Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (1, 16, 16, 16))],
                 [ValueInfo("y", np.dtype(np.float32), (1, 10))], inits, opsets={"": 17})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lazy")
    save_spore(float_graph(), d / "float.spore")
    sporeling.compress(d / "float.spore", d / "small.spore", method="fixed", bits=8, min_size=256, check=False,
                       verbose=False)
    return d / "float.spore", d / "small.spore"


def _feeds(model, shapes=None):
    return random_feeds(model, 0, shapes or {})


def owned_float_arrays(root) -> list[np.ndarray]:
    """Float arrays that own their memory, reachable from root through objects, containers, closures and
    default arguments (not through module globals): what a model keeps alive. Views of the mapped file
    (raw weights) own nothing; the arena is bytes."""
    seen, stack, found = set(), [root], {}
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, str, bytes, int, float)):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            while isinstance(o.base, np.ndarray):
                o = o.base
            if o.base is None and o.dtype.kind == "f":
                found[id(o)] = o
        elif isinstance(o, types.FunctionType):
            stack += [c.cell_contents for c in o.__closure__ or () if c.cell_contents is not None]
            stack += [*(o.__defaults__ or ()), *(o.__kwdefaults__ or {}).values()]
        else:
            stack += gc.get_referents(o)
    return list(found.values())


def test_lazy_outputs_are_bit_identical_and_weights_stay_encoded(files):
    _, small = files
    assert set(read_info(small)["tensors"]["by_codec"]) & {"qpack", "qfse"}
    eager, lazy = sporeling.load(small), sporeling.load(small, lazy=True)
    assert type(eager.session) is Session and isinstance(lazy.session, LazySession)
    encoded = {n for n, a in lazy.graph.initializers.items() if isinstance(a, LazyTensor)}
    assert encoded == {"w1", "w2h", "w3"}
    assert "w2" in lazy.session.lazy  # the Cast of the float16 weight is recomputed on demand, not folded
    feeds = _feeds(eager)
    want = eager.run(feeds)["y"]
    for _ in range(2):  # the second run uses the cached plan
        got = lazy.run(feeds)["y"]
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_lazy_model_keeps_no_decoded_weight_after_a_run(files):
    _, small = files
    eager, lazy = sporeling.load(small), sporeling.load(small, lazy=True)
    feeds = _feeds(eager)
    eager.run(feeds)
    lazy.run(feeds)
    smallest = min(a.nbytes for a in lazy.graph.initializers.values() if isinstance(a, LazyTensor))
    big = [a.nbytes for a in owned_float_arrays(eager) if a.nbytes >= smallest]
    assert len(big) >= 3  # the check sees eager's decoded weights and its packed copies ...
    assert [a.nbytes for a in owned_float_arrays(lazy) if a.nbytes >= smallest] == []  # ... and none in lazy
    plan = next(iter(lazy.session._plans.values()))
    held = {name: plan.template[s] for name, s in plan.slots.items() if name in lazy.session.lazy}
    assert held and all(isinstance(v, LazyTensor) for v in held.values())


def test_corrupt_payload_is_reported_at_run_naming_the_file(tmp_path):
    g = float_graph()
    enc = encode(quantize_tensor(g.initializers["w3"], 8, 0), entropy=False)
    bad = tmp_path / "bad.spore"  # checksums valid, the codes one byte short
    save_spore(g, bad, encoded={"w3": Encoded(enc.codec, bytes(enc.payload)[:-1], enc.params)})
    with pytest.raises(SporeFormatError, match="pack into") as err:
        sporeling.load(bad)
    assert str(err.value).startswith(str(bad))
    lazy = sporeling.load(bad, lazy=True)  # nothing decoded yet
    with pytest.raises(SporeFormatError, match="pack into") as err:
        lazy.run(_feeds(lazy))
    assert str(err.value).startswith(str(bad)) and "'w3'" in str(err.value)


def test_plain_spore_loads_lazily_as_usual(files):
    plain, _ = files
    eager, lazy = sporeling.load(plain), sporeling.load(plain, lazy=True)
    assert type(lazy.session) is Session
    feeds = _feeds(eager)
    assert np.array_equal(eager.run(feeds)["y"], lazy.run(feeds)["y"])


def test_cli_run_and_bench_take_lazy(files, tmp_path, capsys):
    import json

    from sporeling.cli import main

    _, small = files
    assert main(["run", str(small), "--lazy"]) == 0
    report = tmp_path / "bench.json"
    assert main(["bench", str(small), "--lazy", "--runs", "2", "--warmup", "0", "--json", str(report)]) == 0
    assert "median latency" in capsys.readouterr().out
    assert json.loads(report.read_text())["lazy"] is True


@pytest.mark.assets
@pytest.mark.parametrize("asset,shapes", [("ppocr_det", {"x": (1, 3, 96, 128)}), ("mp_face_landmark", {})])
def test_real_compressed_models_are_bit_identical(asset, shapes, tmp_path):
    dst = tmp_path / f"{asset}.spore"
    sporeling.compress(require(asset), dst, method="fixed", bits=8, check=False, verbose=False)
    eager, lazy = sporeling.load(dst), sporeling.load(dst, lazy=True)
    assert len(lazy.session.lazy) > 20
    feeds = _feeds(eager, shapes)
    want, got = eager.run(feeds), lazy.run(feeds)
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name], got[name]), name
