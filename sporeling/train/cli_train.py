"""`sporeling train`: train a model file (or a zoo model) on IDX files, an image folder or an .npz, with
checkpoints that survive a kill, and optionally export the trained inference model."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

EXAMPLES = """examples:
  sporeling train zoo:cnn --data /usr/share/datasets/fashion-mnist --epochs 2 --checkpoint runs/cnn -o cnn.spore
  sporeling train zoo:cnn --data fmnist/ --checkpoint runs/cnn --resume       go on after a crash or a kill
  sporeling train net.onnx --data photos/ --size 96,96 --classes 5 --trainable 'classifier.*'
                                                        a new 5-class head on a frozen backbone
  sporeling train net.onnx --data train.npz --optimizer sgd --lr 0.1 --momentum 0.9 --schedule cosine

--data reads a folder of IDX files (Fashion-MNIST / MNIST names; the t10k files are the test split), one
sub-folder of images per class (train/ and test/ inside it if split), or an .npz with arrays x and y
(x_test and y_test for the test split). uint8 images are scaled to [0, 1], then (x - mean) / std, and laid out
as the model's input wants (NCHW, or NHWC for TFLite models); float arrays are fed as they are.
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("train", help="train a model on the device, with checkpoints, then export it",
                       description="Train MODEL (.onnx, .tflite, .spore, or zoo:lenet5 / zoo:cnn) on --data with "
                       "a progress bar, writing checkpoints that a killed run resumes from bit-identically.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a model file, or zoo:lenet5 / zoo:cnn (28x28 grey images, built here)")
    p.add_argument("--data", required=True, metavar="DIR_OR_FILE", help="the training data (see below)")
    p.add_argument("--epochs", type=int, default=1, metavar="E", help="epochs to train in all (default 1)")
    p.add_argument("--batch", type=int, default=64, metavar="B", help="batch size (default 64)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam", help="default adam")
    p.add_argument("--lr", type=float, default=None, metavar="LR", help="learning rate (default 0.001 for "
                   "adam/adamw, 0.01 for sgd)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=None, metavar="WD",
                   help="weight decay (default 0; 0.01 for adamw)")
    p.add_argument("--schedule", choices=["none", "cosine", "step"], default="none",
                   help="learning-rate schedule over the whole run (step: x0.1 every epoch)")
    p.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "mse", "bce_with_logits"])
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="S")
    p.add_argument("--accumulate", type=int, default=1, metavar="K",
                   help="sum the gradients of K batches before each update (a K times larger virtual batch)")
    p.add_argument("--precision", choices=["float32", "mixed"], default="float32",
                   help="mixed: keep the activations backward reads in float16 (less memory), weights in float32")
    p.add_argument("--checkpoint", metavar="DIR", help="write checkpoints here (each epoch and every --every steps)")
    p.add_argument("--every", type=int, default=100, metavar="N", help="checkpoint every N steps (default 100)")
    p.add_argument("--keep", type=int, default=3, metavar="K", help="checkpoints kept (default 3)")
    p.add_argument("--resume", action="store_true", help="go on from the newest checkpoint in --checkpoint")
    p.add_argument("--classes", type=int, metavar="K", help="put a new K-class classifier on the model")
    p.add_argument("--trainable", action="append", metavar="PATTERN",
                   help="train only parameters matching this glob (repeatable); the rest stay frozen")
    p.add_argument("--test", metavar="DIR_OR_FILE", help="evaluate on this data after each epoch (default: the "
                   "test split of --data when it has one)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training samples")
    p.add_argument("--size", metavar="H,W", help="resize image-folder images to this size")
    p.add_argument("--grayscale", action="store_true", help="read image-folder images as one grey channel")
    p.add_argument("--mean", type=float, default=0.0, help="subtracted after scaling to [0, 1] (default 0)")
    p.add_argument("--std", type=float, default=1.0, help="divided by after subtracting --mean (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order, Dropout and new layers")
    p.add_argument("-o", "--output", metavar="OUT.spore", help="export the trained inference model here")
    p.add_argument("--int8", action="store_true", help="export with 8-bit weights (about 4x smaller)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="BLAS threads (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the per-epoch records as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _images(x: np.ndarray, want_nhwc: bool, mean: float, std: float) -> np.ndarray:
    """uint8 images (IDX files, image folders, an .npz of pixels) scaled and laid out for the model; float
    arrays (an .npz of prepared inputs) go in as they are."""
    from .data import to_nchw_float

    if x.dtype != np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32)
    out = to_nchw_float(x, mean, std)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1)) if want_nhwc else out


def _layout(trainer) -> bool:
    """Whether the model takes NHWC images (TFLite style): its input's last dim is 1 or 3 and the second is not."""
    shape = trainer.autograd.session.inputs[0].shape or ()
    return len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)


def _data(path: str, split: str, size, limit=None, grayscale: bool = False):
    from .data import load_dataset

    x, y, names = load_dataset(path, split, size=size, grayscale=grayscale)
    if limit:
        x, y = x[:limit], y[:limit]
    return x, y.astype(np.int64), names


def cmd_train(args) -> int:
    from ..errors import SporelingError
    from ..runtime.threads import apply_threads
    from . import SGD, Adam, AdamW, CosineLR, StepLR, Trainer
    from .loop import fit, resume_point
    from .losses import CrossEntropy, get_loss

    if args.resume and not args.checkpoint:
        raise SporelingError("--resume needs --checkpoint DIR")
    for name in ("epochs", "batch", "every", "keep", "accumulate"):
        if getattr(args, name) is not None and getattr(args, name) < (0 if name == "every" else 1):
            raise SporelingError(f"--{name} must be a positive number")
    apply_threads(args.threads or 1)
    size = tuple(int(v) for v in args.size.split(",")) if args.size else None
    x_raw, y, names = _data(args.data, "train", size, args.limit, args.grayscale)
    test = None
    try:
        wants_test = args.test or _has_test(args.data)
        test_raw = _data(args.test or args.data, "test", size, grayscale=args.grayscale) if wants_test else None
    except SporelingError:
        if args.test:
            raise
        test_raw = None
    steps_per_epoch = -(-len(y) // args.batch)
    updates_per_epoch = max(1, steps_per_epoch // args.accumulate)  # schedules count optimizer updates
    total = max(1, steps_per_epoch * args.epochs // args.accumulate)

    def make_optimizer():
        lr = args.lr if args.lr is not None else (0.01 if args.optimizer == "sgd" else 1e-3)
        schedule = None
        if args.schedule == "cosine":
            schedule = CosineLR(total)
        elif args.schedule == "step":
            schedule = StepLR(updates_per_epoch, 0.1)
        if args.optimizer == "sgd":
            return SGD(lr=lr, momentum=args.momentum, weight_decay=args.weight_decay or 0.0, schedule=schedule)
        cls = Adam if args.optimizer == "adam" else AdamW
        wd = args.weight_decay if args.weight_decay is not None else (0.01 if cls is AdamW else 0.0)
        return cls(lr=lr, weight_decay=wd, schedule=schedule)

    model = _model(args)
    loss = CrossEntropy(label_smoothing=args.label_smoothing) if args.loss == "cross_entropy" and \
        args.label_smoothing else args.loss
    trainer, batches, path = resume_point(
        args.checkpoint if args.resume else None,
        lambda: Trainer(model, loss=loss, optimizer=make_optimizer(), seed=args.seed, trainable=args.trainable,
                        accumulate=args.accumulate, precision=args.precision),
        lambda p: Trainer.load_checkpoint(p, model, loss=get_loss(loss)),
        len(y), args.batch, args.seed)
    nhwc = _layout(trainer)
    x = _images(x_raw, nhwc, args.mean, args.std)
    _check_channels(trainer, x, nhwc, args.data)
    if test_raw is not None:
        test = (_images(test_raw[0], nhwc, args.mean, args.std), test_raw[1])
    out = sys.stderr
    n_params = sum(v.size for v in trainer.parameters.values())
    print(f"training {args.model}: {len(trainer.parameters)} tensors, {n_params:,} parameters trainable; "
          f"{len(y)} samples{' (' + str(len(names)) + ' classes)' if names else ''}, batch {args.batch}, "
          f"{type(trainer.optimizer).__name__} lr {trainer.learning_rate:g}" +
          (f"; resumed from {path} at step {trainer.steps}" if path else ""), file=out)

    def report(rec):
        line = f"epoch {rec['epoch']}: step {rec['steps']}"
        if rec["train_loss"] is not None:
            line += f", loss {rec['train_loss']:.4f}, accuracy {rec['train_accuracy']:.4f}, " \
                    f"{rec['samples_per_s']:.0f} samples/s"
        if rec.get("test_accuracy") is not None:
            line += f"; test loss {rec['test_loss']:.4f}, accuracy {rec['test_accuracy']:.4f}"
        print(line, file=out)

    records = fit(trainer, x, y, batches, args.epochs, checkpoint=args.checkpoint, every=args.every,
                  keep=args.keep, test=test, progress=not args.quiet, stream=out, on_epoch=report)
    if args.output:
        info = trainer.export(args.output, quantize="int8" if args.int8 else None)
        print(f"wrote {info['path']} ({info['bytes']:,} bytes)", file=out)
    if args.json:
        from ..tools import atomic_write

        atomic_write(args.json, lambda f: f.write(json.dumps(records, indent=1)), mode="w")
    return 0


def _check_channels(trainer, x: np.ndarray, nhwc: bool, data: str) -> None:
    """Images with a channel count the model does not take get an error that says what to change."""
    from ..errors import SporelingError

    shape = trainer.autograd.session.inputs[0].shape or ()
    if len(shape) != 4 or x.ndim != 4:
        return
    want, have = (shape[-1], x.shape[-1]) if nhwc else (shape[1], x.shape[1])
    if isinstance(want, int) and want > 0 and want != have:
        hint = " (add --grayscale)" if want == 1 else ""
        raise SporelingError(f"{data}: the images have {have} channels, the model takes {want}{hint}")


def _has_test(path: str) -> bool:
    if os.path.isdir(path):
        names = os.listdir(path)
        return any(n.startswith("t10k-images") for n in names) or os.path.isdir(os.path.join(path, "test"))
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return "x_test" in z.files
    return False


def _model(args):
    from .transfer import with_classifier
    from .zoo import build

    if args.model.startswith("zoo:"):
        model = build(args.model, classes=args.classes or 10, seed=args.seed)
        return model
    from ..model import load_graph

    if not os.path.exists(args.model):
        from ..errors import ModelLoadError

        raise ModelLoadError(f"{args.model}: no such file")
    graph = load_graph(args.model)
    return with_classifier(graph, args.classes, seed=args.seed) if args.classes else graph
