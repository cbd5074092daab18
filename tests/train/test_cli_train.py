"""`sporeling train` from the command line: checkpoints, resume, a run killed at random moments ending
bit-identical to one never stopped, export, errors; and (slow, real data) Fashion-MNIST to 90%."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import sporeling
from sporeling.cli import main
from sporeling.train.checkpoint import latest_checkpoint, read_checkpoint

from ..assets import require


def _npz(path, n=320, seed=0):
    """Images whose class shows in them (a bright band at a class-dependent row), so a model can learn them."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, n)
    x = (r.random((n, 28, 28)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 + 2 * c: 4 + 2 * c] = 220
    np.savez(path, x=x, y=y, x_test=x[:64], y_test=y[:64])
    return str(path)


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sporeling", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _final(folder) -> dict:
    arrays, meta = read_checkpoint(latest_checkpoint(folder))
    return {"arrays": arrays, "steps": meta["steps"], "rng": meta["rng"], "batches": meta["extra"]["batches"]}


def _same(a: dict, b: dict) -> bool:
    return (a["steps"] == b["steps"] and a["rng"] == b["rng"] and a["batches"] == b["batches"]
            and sorted(a["arrays"]) == sorted(b["arrays"])
            and all(np.array_equal(a["arrays"][k], b["arrays"][k]) for k in a["arrays"]))


COMMON = ["--epochs", "3", "--batch", "32", "--every", "2", "--quiet", "--optimizer", "sgd", "--lr", "0.05"]


def test_train_checkpoints_exports_and_reports(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz")
    out, rec = tmp_path / "m.spore", tmp_path / "rec.json"
    code = main(["train", "zoo:lenet5", "--data", data, "--checkpoint", str(tmp_path / "ck"), "-o", str(out),
                 "--json", str(rec), *COMMON])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "epoch 3: step 30" in err and "test loss" in err
    records = json.loads(rec.read_text())
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert len([f for f in os.listdir(tmp_path / "ck") if f.endswith(".safetensors")]) == 3  # --keep 3
    model = sporeling.load(out)
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert model.run({"input": x})["logits"].shape == (2, 10)


def test_resume_after_a_stop_is_bit_identical(tmp_path):
    data = _npz(tmp_path / "d.npz")
    _cli("train", "zoo:lenet5", "--data", data, "--checkpoint", str(tmp_path / "a"), *COMMON)
    one = COMMON.copy()
    one[1] = "1"
    _cli("train", "zoo:lenet5", "--data", data, "--checkpoint", str(tmp_path / "b"), *one)
    proc = _cli("train", "zoo:lenet5", "--data", data, "--checkpoint", str(tmp_path / "b"), "--resume", *COMMON)
    assert "resumed from" in proc.stderr
    assert _same(_final(tmp_path / "a"), _final(tmp_path / "b"))


def _step_of(folder) -> int:
    path = latest_checkpoint(folder) if os.path.isdir(folder) else None
    return -1 if path is None else int(os.path.basename(path).split("-")[1].split(".")[0])


def test_killed_at_random_moments_resumes_bit_identically(tmp_path):
    """SIGKILL at random moments -- during start-up, mid-step, mid-checkpoint-write -- then resume, again and
    again: the run ends with the same bits as one never stopped."""
    data = _npz(tmp_path / "d.npz", n=960)
    longer = ["--epochs", "4", "--batch", "16", "--every", "3", "--quiet", "--optimizer", "adam"]
    _cli("train", "zoo:lenet5", "--data", data, "--checkpoint", str(tmp_path / "ref"), *longer)
    run = str(tmp_path / "run")
    args = [sys.executable, "-m", "sporeling", "train", "zoo:lenet5", "--data", data, "--checkpoint", run,
            "--resume", *longer]
    rng = random.Random(1234)
    # kill once in start-up, then each time soon after the run passes a random step (240 steps in all)
    targets = [None] + sorted(rng.sample(range(10, 235), 6))
    kills = []
    for target in targets + ["finish"]:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if target is None:
            time.sleep(0.3)
        elif target != "finish":
            while proc.poll() is None and _step_of(run) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.04))  # a few steps on: mid-step or mid-write, wherever it lands
        if target != "finish" and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(_step_of(run))
        _, err = proc.communicate()
        assert proc.returncode == (0 if target == "finish" else -signal.SIGKILL), err
    assert len(kills) == len(targets) and len(set(kills)) >= 5, kills
    assert _same(_final(tmp_path / "ref"), _final(run))


def test_transfer_from_a_model_file(tmp_path):
    from sporeling.format import save_spore
    from sporeling.train.zoo import lenet5

    save_spore(lenet5(), str(tmp_path / "backbone.spore"))
    data = _npz(tmp_path / "d.npz")
    proc = _cli("train", str(tmp_path / "backbone.spore"), "--data", data, "--classes", "10", "--trainable",
                "classifier.*", "--epochs", "1", "--quiet", "-o", str(tmp_path / "t.spore"))
    assert "2 tensors" in proc.stderr  # only the new classifier's weight and bias learn
    assert sporeling.load(tmp_path / "t.spore").outputs[0].name == "logits"


@pytest.mark.parametrize("args,message", [
    (["--resume"], "--resume needs --checkpoint"),
    (["--epochs", "0"], "--epochs must be"),
    (["--trainable", "nothing*"], "matches no parameter"),
])
def test_errors_are_one_line(tmp_path, args, message):
    data = _npz(tmp_path / "d.npz", n=40)
    proc = _cli("train", "zoo:lenet5", "--data", data, "--quiet", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_data_and_model_are_named(tmp_path):
    proc = _cli("train", "zoo:lenet5", "--data", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and str(tmp_path / "none") in proc.stderr
    proc = _cli("train", str(tmp_path / "no.onnx"), "--data", _npz(tmp_path / "d.npz", n=40), check=False)
    assert proc.returncode == 2 and "no.onnx" in proc.stderr
    proc = _cli("train", "zoo:resnet", "--data", _npz(tmp_path / "d.npz", n=40), check=False)
    assert proc.returncode == 2 and "zoo:lenet5" in proc.stderr


@pytest.mark.slow
@pytest.mark.assets
def test_fashion_mnist_cnn_reaches_90_percent(tmp_path):
    """The conv32-conv64-fc128 CNN, trained by sporeling alone on the CPU, to >= 90% test accuracy."""
    for name in ("fmnist_train_images", "fmnist_train_labels", "fmnist_test_images", "fmnist_test_labels"):
        path = require(name)
    folder = os.path.dirname(path)
    rec = tmp_path / "rec.json"
    start = time.perf_counter()
    _cli("train", "zoo:cnn", "--data", folder, "--epochs", "3", "--batch", "64", "--optimizer", "adam",
         "--lr", "0.001", "--schedule", "cosine", "--quiet", "--json", str(rec), "--threads", "2",
         "-o", str(tmp_path / "cnn.spore"))
    records = json.loads(rec.read_text())
    print(f"Fashion-MNIST CNN: {records} in {time.perf_counter() - start:.0f} s")
    assert records[-1]["test_accuracy"] >= 0.90


def test_float_npz_inputs_are_fed_as_they_are(tmp_path):
    """An .npz of prepared float inputs (already NCHW) is not rescaled or transposed."""
    r = np.random.default_rng(0)
    y = r.integers(0, 10, 64)
    x = r.standard_normal((64, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=y)
    proc = _cli("train", "zoo:lenet5", "--data", str(tmp_path / "f.npz"), "--epochs", "1", "--quiet")
    assert "epoch 1: step 1" in proc.stderr
    x[:, :, 0, 0] = 1.0
    np.savez(tmp_path / "bad.npz", x=x.transpose(0, 2, 3, 1), y=y)  # NHWC floats: the model's input says no
    proc = _cli("train", "zoo:lenet5", "--data", str(tmp_path / "bad.npz"), "--epochs", "1", "--quiet", check=False)
    assert proc.returncode == 2 and "input" in proc.stderr


def test_image_folder_transfer_and_channel_hint(tmp_path):
    """Photos in one folder per class, resized and read grey for LeNet-5's new 2-class head; read in colour,
    the error says what to add."""
    PIL = pytest.importorskip("PIL.Image")
    from sporeling.format import save_spore
    from sporeling.train.zoo import lenet5

    r = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 200)):
        os.makedirs(tmp_path / "photos" / cls)
        for k in range(3):
            img = np.clip(r.normal(level, 20, (40, 36, 3)), 0, 255).astype(np.uint8)
            PIL.fromarray(img).save(tmp_path / "photos" / cls / f"{k}.png")
    save_spore(lenet5(), str(tmp_path / "lenet.spore"))
    args = ["train", str(tmp_path / "lenet.spore"), "--data", str(tmp_path / "photos"), "--size", "28,28",
            "--classes", "2", "--epochs", "2", "--batch", "3", "--quiet"]
    proc = _cli(*args, "--grayscale", "--trainable", "classifier.*")
    assert "(2 classes)" in proc.stderr and "epoch 2: step 4" in proc.stderr
    proc = _cli(*args, check=False)
    assert proc.returncode == 2 and "3 channels, the model takes 1 (add --grayscale)" in proc.stderr
