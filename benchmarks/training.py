"""Training-step time and working memory of sporeling against PyTorch eager and onnxruntime-training (issue 5).

One training step is forward, cross-entropy loss, backward and an SGD update (lr 0.01, momentum 0.9) on one
fixed, seeded batch with random labels. Models: LeNet-5 and the conv32-conv64-fc128 CNN of sporeling.train.zoo
(1x28x28, batch 64; the torch modules are built layer for layer and given the zoo's initial weights) and
MobileNetV2 (benchmarks/models.py, batch 8, 3x224x224, BatchNorm trained with batch statistics; the classifier's
Dropout is left out so that every engine computes the same function). sporeling trains the zoo graph, or for
MobileNetV2 the ONNX file exported from the torch module in eval mode with its BatchNormalization nodes kept;
onnxruntime-training trains that ONNX file (for the zoo models, the export of the torch module holding the zoo
weights) through artifacts from generate_artifacts. Its on-device SGD has no momentum: it runs plain SGD.

Each engine runs in a worker process of its own, as working memory is per process: peak resident set (VmHWM,
reset by writing 5 to /proc/self/clear_refs once the model is loaded) minus the RSS after imports, data and model
load, so the libraries' own size does not count. The parent keeps the timing interleaved: after --warmup untimed
steps per engine it asks each worker in turn, the order rotating, for --steps steps, --rounds times, and reports
the median over all timed steps. The first step's loss (before any update) must agree with PyTorch's to float
tolerance. A short profile after the rounds splits a step into forward, loss, backward and update, with
sporeling's time per op type.

Threads (--threads, default 1) are pinned in every worker: OMP/OPENBLAS/MKL_NUM_THREADS, threadpoolctl for
the BLAS pools, torch.set_num_threads (one inter-op thread), onnxruntime's intra-op pool (one inter-op).
onnxruntime-training 1.19.2 needs onnx 1.16.2 and NumPy 1.x and cannot share .venv with onnxruntime 1.32, so
it lives in its own venv (default ~/.cache/sporeling/ortt-venv, created on first use with pip; its package
imports torch at import time, so the same torch 2.13.0 goes in too). If it cannot be had its row says n/a.

    python benchmarks/training.py                      # all models, 5 rounds, 1 thread
    python benchmarks/training.py --quick --models lenet5,cnn
    python benchmarks/training.py --engines torch,sporeling --threads 2

Prints a table and writes benchmarks/results/training.json (atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from unittest import mock

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# common.py needs NumPy and the standard library only: the ortt venv's workers import it too
from benchmarks.common import one_line, reset_peak_rss, status_kib

# name -> (batch, input shape, classes, steps per round)
MODELS = {"lenet5": (64, (1, 28, 28), 10, 20), "cnn": (64, (1, 28, 28), 10, 10),
          "mobilenetv2": (8, (3, 224, 224), 1000, 3)}
ENGINES = ("torch", "sporeling", "ort-training")
LR, MOMENTUM = 0.01, 0.9
ORTT_PACKAGES = ["onnxruntime-training==1.19.2", "onnx==1.16.2", "numpy<2", "torch==2.13.0"]
DEFAULT_ORTT_VENV = os.path.join(os.path.expanduser("~"), ".cache", "sporeling", "ortt-venv")
LOSS_RTOL = 1e-4


# ---- the torch modules --------------------------------------------------------------------------------------
def torch_module(name: str):
    """An untrained torch module with the architecture (and parameter names) of `name`."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if name == "mobilenetv2":
        from benchmarks import models as bench_models

        module = bench_models.MobileNetV2()
        module.classifier[0] = nn.Identity()  # no Dropout: the export in eval mode has none either
        return module

    class ZooNet(nn.Module):
        """sporeling.train.zoo's lenet5 / cnn, layer for layer (NCHW flatten, as the zoo's Flatten)."""

        def __init__(self):
            super().__init__()
            if name == "lenet5":
                self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
                self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
            else:
                self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
                self.fc1, self.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, 10)

        def forward(self, x):
            if name == "lenet5":
                x = F.max_pool2d(F.relu(self.conv1(x)), 2)
                x = torch.flatten(F.max_pool2d(F.relu(self.conv2(x)), 2), 1)
                return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
            return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    return ZooNet()


# ---- preparing a model's files (parent) -----------------------------------------------------------------------
def prepare(name: str, workdir: str) -> dict:
    """Writes the batch, the torch weights (safetensors) and the ONNX export of `name` into workdir."""
    import warnings

    import onnx
    import torch
    from safetensors.numpy import save_file
    from torch import nn

    batch, shape, classes, _ = MODELS[name]
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, classes, batch).astype(np.int64)
    spec = {"model": name, "x": os.path.join(workdir, f"{name}.x.npy"), "y": os.path.join(workdir, f"{name}.y.npy"),
            "weights": os.path.join(workdir, f"{name}.safetensors"), "onnx": os.path.join(workdir, f"{name}.onnx")}
    np.save(spec["x"], x)
    np.save(spec["y"], y)
    if name == "mobilenetv2":
        from benchmarks import models as bench_models

        module, _ = bench_models._build_torch(name)  # seeded weights, random BN affine and real running statistics
        module.classifier[0] = nn.Identity()
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1  # _build_torch left the cumulative average of its calibration passes
    else:
        from sporeling.train.zoo import build

        spec["zoo"] = name
        module = torch_module(name)
        weights = {k: torch.from_numpy(np.array(v)) for k, v in build(name, seed=0).initializers.items()}
        module.load_state_dict(weights, strict=True)
    save_file({k: v.detach().numpy().copy() for k, v in module.state_dict().items()}, spec["weights"])
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.from_numpy(x),), spec["onnx"], opset_version=17, dynamo=False,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
                          input_names=["input"], output_names=["logits"])
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    kept = sum(n.op_type == "BatchNormalization" for n in onnx.load(spec["onnx"]).graph.node)
    if kept != bns:
        raise RuntimeError(f"{spec['onnx']}: {kept} BatchNormalization nodes for {bns} BatchNorm2d (folded away?)")
    spec["batchnorm_nodes"] = kept
    return spec


# ---- onnxruntime-training in its own venv ----------------------------------------------------------------------
def ortt_python(venv: str, install: bool) -> tuple[str | None, str]:
    """(the venv's python, its versions) if onnxruntime-training imports there, else (None, why not). Creates
    the venv with pip when it is missing and install is True."""
    py = os.path.join(venv, "bin", "python")
    probe = "import onnxruntime, onnx, numpy; import onnxruntime.training.api; " \
            "print(onnxruntime.__version__, onnx.__version__, numpy.__version__)"
    if not os.path.exists(py):
        if not install:
            return None, f"no venv at {venv} (run without --no-ortt-install to create it)"
        print(f"creating {venv} with {' '.join(ORTT_PACKAGES)} (once) ...", file=sys.stderr, flush=True)
        for cmd in ([sys.executable, "-m", "venv", venv], [py, "-m", "pip", "install", "-q", *ORTT_PACKAGES]):
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                return None, f"{' '.join(cmd[-3:])} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    done = subprocess.run([py, "-c", probe], check=False, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return None, f"import failed in {venv}: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    ort_v, onnx_v, np_v = done.stdout.split()
    return py, f"onnxruntime-training {ort_v}, onnx {onnx_v}, numpy {np_v}"


def ortt_artifacts(onnx_path: str, outdir: str) -> int:
    """Runs in the ortt venv: training, eval and optimizer models and the checkpoint for onnx_path. Parameters
    are the Conv/Gemm weights and biases and the BatchNormalization scales and shifts, not the statistics."""
    import onnx
    import onnxruntime
    from onnxruntime.training import artifacts

    onnxruntime.set_default_logger_severity(3)
    model = onnx.load(onnx_path)
    inits = {i.name for i in model.graph.initializer}
    learn = {x for n in model.graph.node for x in (n.input[1:3] if n.op_type in ("Conv", "Gemm", "BatchNormalization")
                                                   else ()) if x in inits}
    os.makedirs(outdir, exist_ok=True)
    artifacts.generate_artifacts(model, requires_grad=sorted(learn), frozen_params=sorted(inits - learn),
                                 loss=artifacts.LossType.CrossEntropyLoss, optimizer=artifacts.OptimType.SGD,
                                 artifact_directory=outdir)
    return 0


# ---- the engines, inside their workers -------------------------------------------------------------------------
def _load_torch(spec: dict, threads: int):
    import torch
    from safetensors.numpy import load_file
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # settable only before torch's first parallel work
        torch.set_num_interop_threads(1)
    module = torch_module(spec["model"])
    module.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(spec["weights"]).items()}, strict=True)
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    x, y = torch.from_numpy(np.load(spec["x"])), torch.from_numpy(np.load(spec["y"]))

    def step(clock=None):
        marks = [time.perf_counter()]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(x), y)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        opt.step()
        _laps(clock, ("forward + loss", "backward", "optimizer"), marks)
        return loss.item()

    return step, {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "torch_interop_threads": torch.get_num_interop_threads()}


def _load_ortt(spec: dict, threads: int):
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    art = spec["ortt_artifacts"]
    state = CheckpointState.load_checkpoint(os.path.join(art, "checkpoint"))
    module = Module(os.path.join(art, "training_model.onnx"), state, os.path.join(art, "eval_model.onnx"),
                    session_options=so)
    opt = Optimizer(os.path.join(art, "optimizer_model.onnx"), module)
    opt.set_learning_rate(LR)
    module.train()
    x, y = np.load(spec["x"]), np.load(spec["y"])

    def step(clock=None):
        marks = [time.perf_counter()]
        loss = module(x, y)
        marks.append(time.perf_counter())
        opt.step()
        module.lazy_reset_grad()
        _laps(clock, ("forward + loss + backward", "optimizer"), marks)
        return float(loss)

    return step, {"onnxruntime": ort.__version__, "intra_op_threads": threads, "optimizer": "SGD without momentum"}


def _laps(clock: dict | None, names: tuple, marks: list[float]) -> None:
    """Adds the time between successive marks (the last one is now) to clock[name]."""
    if clock is not None:
        marks.append(time.perf_counter())
        phases = clock.setdefault("phases", {})
        for name, a, b in zip(names, marks, marks[1:]):
            phases[name] = phases.get(name, 0.0) + b - a


def _timed(fn, table: dict, key):
    """fn, adding its time to table[key]; key may be a function of fn's arguments."""
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            name = key(*a, **k) if callable(key) else key
            table[name] = table.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def _conv_kind(ctx) -> str:
    """A Conv's backward time is told apart by kind: depthwise (grouped), pointwise (1x1) or full."""
    w = ctx.inputs[1]
    return ("Conv grouped" if ctx.attrs.get("group", 1) > 1 else
            "Conv 1x1" if all(k == 1 for k in w.shape[2:]) else "Conv full")


def _load_sporeling(spec: dict, threads: int):
    import sporeling
    from sporeling.runtime.threads import apply_threads
    from sporeling.train import SGD, Trainer
    from sporeling.train import vjp as vjp_table
    from sporeling.train.zoo import build

    apply_threads(threads)
    source = build(spec["zoo"], seed=0) if spec.get("zoo") else spec["onnx"]
    trainer = Trainer(source, loss="cross_entropy", optimizer=SGD(lr=LR, momentum=MOMENTUM), seed=0)
    x, y = np.load(spec["x"]), np.load(spec["y"])

    def step(clock=None):
        if clock is None:
            return trainer.step({"input": x}, y)
        # Profile: phases through the trainer's parts, forward per op through the session's own timing hook,
        # backward per op by wrapping each rule in the VJP table. Everything is put back afterwards.
        fwd, bwd = clock.setdefault("forward ops", {}), clock.setdefault("backward ops", {})
        ag, phases = trainer.autograd, clock.setdefault("phases", {})
        parts = ((ag, "forward", "forward"), (trainer, "loss", "loss"), (ag, "backward", "backward"),
                 (ag, "update_state", "BN running statistics"), (trainer.optimizer, "step", "optimizer"))
        with contextlib.ExitStack() as patches:
            for obj, attr, key in parts:
                patches.enter_context(mock.patch.object(obj, attr, _timed(getattr(obj, attr), phases, key)))
            run_ops = ag.session._execute
            patches.enter_context(mock.patch.object(ag.session, "_execute", lambda p, e, _: run_ops(p, e, fwd)))
            rules = {op: _timed(rule, bwd, _conv_kind if op == "Conv" else op) for op, rule in vjp_table.VJPS.items()}
            patches.enter_context(mock.patch.dict(vjp_table.VJPS, rules))
            t0 = time.perf_counter()
            loss = trainer.step({"input": x}, y)
            phases["(whole step)"] = phases.get("(whole step)", 0.0) + time.perf_counter() - t0
            return loss

    def arena() -> dict:
        """The training step's arena (activations and gradients together) for the benchmark's batch."""
        plan = next(iter(trainer.autograd.session._plans.values()), None)
        if plan is None:
            return {}
        grads = plan._bw.buffers.values()
        return {"arena_mib": plan.arena.arena_size / 2**20, "buffers_mib": plan.arena.total_size / 2**20,
                "gradients": len(grads), "gradients_mib": sum(b.nbytes for b in grads) / 2**20}

    step.arena = arena
    return step, {"sporeling": sporeling.__version__}


LOADERS = {"torch": _load_torch, "sporeling": _load_sporeling, "ort-training": _load_ortt}


def worker(engine: str, spec_path: str) -> int:
    """One engine in this process, driven over stdin/stdout by JSON lines. Library chatter on stdout is sent
    to stderr so it cannot break the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(obj):
        proto.write(json.dumps(obj) + "\n")

    with open(spec_path) as f:
        spec = json.load(f)
    threads, info = spec["threads"], {}
    try:
        try:  # BLAS pools (numpy's, torch's OpenMP) at the asked count; the ortt venv has no threadpoolctl
            from threadpoolctl import threadpool_info, threadpool_limits

            threadpool_limits(limits=threads)
        except ImportError:
            threadpool_info = None
        step, info = LOADERS[engine](spec, threads)
        if threadpool_info is not None:
            keys = ("internal_api", "num_threads", "version")
            info["blas"] = [{k: d.get(k) for k in keys} for d in threadpool_info()]
    except Exception as e:  # noqa: BLE001  (the parent reports it in the engine's row)
        send({"error": f"load: {one_line(e)}"})
        return 0
    gc.collect()
    base = status_kib("VmRSS")
    send({"ready": True, "base_kib": base, "peak_reset": reset_peak_rss(), **info})
    for line in sys.stdin:
        cmd, times, losses, clock = json.loads(line), [], [], {}
        try:
            if cmd["cmd"] == "run":
                gc.disable()  # a collection inside the step would be charged to it alone
                try:
                    for _ in range(cmd["n"]):
                        t0 = time.perf_counter()
                        losses.append(float(step()))
                        times.append(time.perf_counter() - t0)
                finally:
                    gc.enable()
                send({"times": times, "losses": losses, "peak_kib": status_kib("VmHWM"), "base_kib": base,
                      **({"arena": step.arena()} if hasattr(step, "arena") else {})})
            elif cmd["cmd"] == "profile":
                for _ in range(cmd["n"]):
                    step(clock)
                send({"profile": clock, "steps": cmd["n"]})
        except Exception as e:  # noqa: BLE001
            send({"error": f"{cmd['cmd']}: {one_line(e)}"})
    return 0


# ---- the parent: workers, interleaved rounds, the table --------------------------------------------------------
class Worker:
    """A worker process and its pipe; `error` is set (and the process ended) once anything goes wrong."""

    def __init__(self, engine: str, python: str, spec_path: str, threads: int, timeout: float):
        env = dict(os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        self.engine, self.timeout, self.error, self.info = engine, timeout, None, {}
        # stderr to a file, not a pipe nobody drains while the worker runs; closed by bench_model
        self.log = open(f"{spec_path}.{engine}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--worker", engine, spec_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env, text=True, bufsize=1)

    def _read(self) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()
            why = "timed out" if not ready else f"exited with {self.proc.returncode}"
            self.error = f"worker {why}: {tail[-1][:200] if tail else ''}".rstrip(": ")
            return None
        msg = json.loads(line)
        if "error" in msg:
            self.error = msg["error"]
            self.close()
            return None
        return msg

    def ask(self, **cmd) -> dict | None:
        if self.error:
            return None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            self.error = f"worker pipe: {one_line(e)}"
            return None
        return self._read()

    def close(self) -> None:
        """Ends the worker: its loop stops at the end of its input; a worker stuck in a step is killed."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _summary_profile(msg: dict) -> dict:
    """Milliseconds per step: phases in step order, ops (sporeling's) slowest first."""
    out = {"steps": msg["steps"]}
    for part, table in msg["profile"].items():
        items = table.items() if part == "phases" else sorted(table.items(), key=lambda kv: -kv[1])
        out[part.replace(" ", "_") + "_ms"] = {k: round(1e3 * v / msg["steps"], 2) for k, v in items}
    return out


def bench_model(name: str, args, workdir: str, ortt: tuple[str | None, str]) -> dict:
    batch, shape, classes, default_steps = MODELS[name]
    steps = args.steps or (max(1, default_steps // 4) if args.quick else default_steps)
    row: dict = {"model": name, "batch": batch, "input": list(shape), "classes": classes, "steps_per_round": steps,
                 "engines": {}}
    try:
        spec = prepare(name, workdir)
    except Exception as e:  # noqa: BLE001
        row["error"] = f"prepare: {one_line(e)}"
        return row
    spec["threads"] = args.threads
    row["batchnorm_nodes"] = spec["batchnorm_nodes"]
    pythons = {"torch": sys.executable, "sporeling": sys.executable}
    if "ort-training" in args.engines:
        if ortt[0] is None:
            row["engines"]["ort-training"] = {"error": f"n/a: {ortt[1]}"}
        else:
            spec["ortt_artifacts"] = os.path.join(workdir, f"{name}.ortt")
            done = subprocess.run([ortt[0], os.path.abspath(__file__), "--ortt-artifacts", spec["onnx"],
                                   spec["ortt_artifacts"]], check=False, capture_output=True, text=True,
                                  timeout=1800, env=dict(os.environ, PYTHONPATH=_ROOT))
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
                row["engines"]["ort-training"] = {"error": f"n/a: generate_artifacts failed: {tail}"}
            else:
                pythons["ort-training"] = ortt[0]
    spec_path = os.path.join(workdir, f"{name}.spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    workers = [Worker(e, pythons[e], spec_path, args.threads, args.timeout) for e in args.engines if e in pythons]
    for w in workers:
        w.info = w._read() or {}
    row["engines"].update({w.engine: {"error": w.error} for w in workers if w.error})
    workers = [w for w in workers if not w.error]
    times: dict[str, list[float]] = {w.engine: [] for w in workers}
    first: dict[str, float] = {}
    try:
        for w in workers:  # warm-up; its first step's loss is the check (all engines start from the same weights)
            msg = w.ask(cmd="run", n=args.warmup)
            if msg is not None:
                first[w.engine] = msg["losses"][0]
        last: dict[str, dict] = {}  # the last answer: its loss, and the peak RSS over all steps so far
        for r in range(args.rounds):
            live = [w for w in workers if not w.error]
            for w in live[r % max(len(live), 1):] + live[:r % max(len(live), 1)]:
                last[w.engine] = w.ask(cmd="run", n=steps)
                if last[w.engine] is not None:
                    times[w.engine].extend(last[w.engine]["times"])
        for w in workers:  # the profile runs last: its wrappers are not part of the timed or measured steps
            prof = w.ask(cmd="profile", n=args.profile) if args.profile else None
            if w.error:
                row["engines"][w.engine] = {"error": w.error}
                continue
            t, mem = times[w.engine], last[w.engine]
            row["engines"][w.engine] = {
                "median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t), "timed_steps": len(t),
                "working_mib": (mem["peak_kib"] - mem["base_kib"]) / 1024, "rss_after_load_mib": mem["base_kib"] / 1024,
                "peak_reset": w.info.get("peak_reset"), "first_loss": first.get(w.engine),
                "loss_after_all_steps": mem["losses"][-1], **({"arena": mem["arena"]} if "arena" in mem else {}),
                "info": {k: v for k, v in w.info.items() if k not in ("ready", "base_kib", "peak_reset")},
                "profile": _summary_profile(prof) if prof else None}
    finally:
        for w in workers:
            w.close()
            w.log.close()
    _ratios_and_check(row)
    return row


def _ratios_and_check(row: dict) -> None:
    eng = row["engines"]
    ref = eng.get("torch", {})
    for e in eng.values():
        if "median_ms" in e and "median_ms" in ref:
            e["time_vs_torch"] = e["median_ms"] / ref["median_ms"]
            e["memory_vs_torch"] = e["working_mib"] / ref["working_mib"] if ref["working_mib"] > 0 else None
        if e.get("first_loss") is not None and ref.get("first_loss") is not None:
            e["first_loss_rel_diff"] = abs(e["first_loss"] - ref["first_loss"]) / max(abs(ref["first_loss"]), 1e-12)
            e["first_loss_ok"] = bool(e["first_loss_rel_diff"] <= LOSS_RTOL)


def print_table(rows: list[dict], args) -> None:
    head = ["model", "engine", "ms/step", "vs torch", "working MiB", "vs torch", "first loss", "loss after steps"]
    lines, notes = [], []
    for row in rows:
        if "error" in row:
            notes.append(f"{row['model']}: {row['error']}")
        for engine, e in sorted(row["engines"].items(), key=lambda kv: ENGINES.index(kv[0])):
            if "error" in e:
                lines.append([row["model"], engine, "n/a", "-", "n/a", "-", "-", "-"])
                notes.append(f"{row['model']} / {engine}: {e['error']}")
                continue
            fmt = (lambda v, spec, unit="": "-" if v is None else format(v, spec) + unit)
            lines.append([row["model"], engine, f"{e['median_ms']:.1f}", fmt(e.get("time_vs_torch"), ".2f", "x"),
                          f"{e['working_mib']:.1f}", fmt(e.get("memory_vs_torch"), ".2f", "x"),
                          fmt(e["first_loss"], ".6f") + ("" if e.get("first_loss_ok", True) else " MISMATCH"),
                          fmt(e["loss_after_all_steps"], ".5f")])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print(f"training step (forward, cross-entropy, backward, SGD lr {LR} momentum {MOMENTUM}), median over "
          f"{args.rounds} interleaved rounds, {args.threads} thread(s); working MiB = peak RSS - RSS after load")
    for cells in [head, *lines]:
        print("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    for row in rows:  # the sanity check: same weights, same batch, so the same loss before any update
        diffs = [f"{k} {e['first_loss_rel_diff']:.1e}" for k, e in row["engines"].items() if k != "torch"
                 and "first_loss_rel_diff" in e]
        if diffs:
            notes.append(f"{row['model']}: first-step loss vs torch's, relative difference: {', '.join(diffs)} "
                         f"(tolerance {LOSS_RTOL:g})")
    if any("median_ms" in r["engines"].get("ort-training", {}) for r in rows):
        notes.append("ort-training runs plain SGD (its on-device SGD has no momentum), so its later losses differ")
    for n in notes:
        print("  " + n)
    for row in rows:  # the profile: where one step's time goes
        for engine, e in row["engines"].items():
            if e.get("arena"):
                a = e["arena"]
                print(f"  {row['model']} / {engine}: one arena of {a['arena_mib']:.1f} MiB for {a['buffers_mib']:.1f} "
                      f"MiB of activations and gradients ({a['gradients']} gradients, {a['gradients_mib']:.1f} MiB)")
            prof = e.get("profile") or {}
            if prof.get("phases_ms"):
                print(f"  {row['model']} / {engine}, ms per step: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in prof["phases_ms"].items()))
            for part in ("forward_ops_ms", "backward_ops_ms"):
                if prof.get(part):
                    top = ", ".join(f"{k} {v:.1f}" for k, v in list(prof[part].items())[:6])
                    print(f"    {part[:-3].replace('_', ' ')}: {top}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Training-step time and working memory: sporeling vs PyTorch eager "
                                 "and onnxruntime-training, each engine in its own worker process, interleaved.",
                                 epilog="See the top of benchmarks/training.py and benchmarks/README.md (Training).")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds, each engine in turn per round (default 5)")
    ap.add_argument("--steps", type=int, default=0,
                    help="steps per engine per round (default per model: lenet5 20, cnn 10, mobilenetv2 3)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per engine first (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    ap.add_argument("--profile", type=int, default=2, help="profiled steps after the rounds (0: none; default 2)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 warm-up step, a quarter of the steps")
    ap.add_argument("--ortt-venv", default=os.environ.get("SPORELING_ORTT_VENV", DEFAULT_ORTT_VENV),
                    help="venv holding onnxruntime-training 1.19.2 (default %(default)s)")
    ap.add_argument("--no-ortt-install", action="store_true", help="do not create the ortt venv if it is missing")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a worker may take to answer (default 900)")
    ap.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "training.json"))
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "SPEC"), help=argparse.SUPPRESS)
    ap.add_argument("--ortt-artifacts", nargs=2, metavar=("ONNX", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker or args.ortt_artifacts:  # inside a worker, or in the ortt venv
        return worker(*args.worker) if args.worker else ortt_artifacts(*args.ortt_artifacts)
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), 1
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [n for n in names if n not in MODELS] + [e for e in args.engines if e not in ENGINES]
    if bad:
        ap.error(f"unknown model or engine: {', '.join(bad)}")
    if args.threads < 1 or args.rounds < 1 or args.warmup < 1 or args.steps < 0 or args.profile < 0:
        ap.error("--threads, --rounds and --warmup must be at least 1; --steps and --profile at least 0")

    ortt = ortt_python(args.ortt_venv, not args.no_ortt_install) if "ort-training" in args.engines else (None, "")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sporeling-train-bench-") as workdir:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, args, workdir, ortt))
    print_table(rows, args)

    from benchmarks.common import versions, write_result
    from benchmarks.latency import blas_pools, cpu_model

    result = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": sys.platform},
              "versions": versions("sporeling", "torch", "onnxruntime"), "ort_training": ortt[1] or "not asked",
              "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup, "lr": LR, "momentum": MOMENTUM,
              "blas_parent": blas_pools(), "models": rows}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
