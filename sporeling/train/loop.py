"""The training loop behind `sporeling train`: epochs of shuffled mini-batches, progress, checkpoints, resume.

fit() runs epochs over in-memory arrays with a Batches order (a pure function of seed and epoch), shows a
progress bar per epoch (loss, accuracy, samples/s; tqdm when installed, a line per epoch otherwise), and every
`every` steps and at each epoch's end writes a checkpoint holding the trainer and the data order. A run
started again with resume picks up after the newest checkpoint, so a run killed at any moment and resumed
ends with the same bits as one never stopped: the state is all in the checkpoint, and every step is a
deterministic function of it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Callable

import numpy as np

from .checkpoint import checkpoint_path, latest_checkpoint, prune_checkpoints
from .data import Batches
from .losses import accuracy


def resume_point(folder: str | None, make_trainer: Callable, load_trainer: Callable, n: int, batch: int,
                 seed: int) -> tuple:
    """(trainer, batches, path or None): from the newest checkpoint in folder if there is one, else fresh."""
    path = latest_checkpoint(folder) if folder else None
    if path is None:
        return make_trainer(), Batches(n, batch, seed=seed), None
    trainer = load_trainer(path)
    state = trainer.extra.get("batches")
    batches = Batches.from_state(state) if state else Batches(n, batch, seed=seed)
    if batches.n != n or batches.batch != batch:
        raise ValueError(f"{path}: the checkpoint was taken with {batches.n} samples in batches of {batches.batch}, "
                         f"this run has {n} in batches of {batch}")
    return trainer, batches, path


def _bar(total: int, initial: int, desc: str, stream: IO[str], enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", file=stream, leave=True, dynamic_ncols=True)


def fit(trainer, x: np.ndarray, y: np.ndarray, batches: Batches, epochs: int, *, checkpoint: str | None = None,
        every: int = 0, keep: int = 3, test: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
        stream: IO[str] = sys.stderr, on_epoch: Callable | None = None) -> list[dict]:
    """Trains until `epochs` epochs are done; returns one record per epoch finished in this call."""
    records = []
    if checkpoint:
        os.makedirs(checkpoint, exist_ok=True)

    def save() -> None:
        if checkpoint:
            trainer.save_checkpoint(checkpoint_path(checkpoint, trainer.steps), extra={"batches": batches.state()})
            prune_checkpoints(checkpoint, keep)

    while batches.epoch < epochs:
        epoch = batches.epoch
        bar = _bar(batches.batches_per_epoch, batches.position, f"epoch {epoch + 1}/{epochs}", stream, progress)
        seen = correct = 0
        loss_sum = 0.0
        start = time.perf_counter()
        for idx in batches:
            xb, yb = x[idx], y[idx]
            loss = trainer.step(xb, yb)
            seen += len(idx)
            loss_sum += loss * len(idx)
            pred = trainer.last_output
            if pred is not None and pred.ndim >= 2 and np.issubdtype(yb.dtype, np.integer):
                correct += accuracy(pred, yb) * len(idx)
            if every and trainer.steps % every == 0:
                save()
            if bar is not None:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", sps=f"{rate:.0f}",
                                refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        rec = {"epoch": epoch + 1, "steps": trainer.steps, "seconds": round(seconds, 2),
               "train_loss": loss_sum / seen if seen else None, "train_accuracy": correct / seen if seen else None,
               "samples_per_s": seen / seconds if seconds > 0 else None}
        if test is not None:
            ev = trainer.evaluate(test[0], test[1])
            rec.update({"test_loss": ev["loss"], "test_accuracy": ev.get("accuracy")})
        save()
        records.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
    return records
