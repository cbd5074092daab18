"""sporeling.train: training on the device, on the same graph IR and Session as inference.

- Trainer (trainer.py): step, gradients and parameters as named arrays, checkpoints, evaluate, export.
- autograd.py: the graph in training form, forward through the Session's plan, backward through the rules.
- the backward rules, one per op (vjp.py's table, filled by vjp_elementwise, vjp_nn, vjp_conv, vjp_pool, vjp_rnn, vjp_more).
- optim.py (SGD, Adam, AdamW, StepLR, CosineLR), losses.py (cross-entropy, MSE, BCE with logits).
- checkpoint.py (safetensors + JSON, atomic), data.py (IDX files, image folders, .npz, batch order).
- transfer.py (a new classifier on a frozen backbone, or a backbone joined to a head), zoo.py (LeNet-5, a CNN).
- loop.py and cli_train.py: `sporeling train`.
"""

from . import vjp_conv, vjp_elementwise, vjp_more, vjp_nn, vjp_pool, vjp_rnn  # noqa: F401  (importing them registers their rules)
from .losses import MSE, BCEWithLogits, CrossEntropy, accuracy, get_loss
from .optim import SGD, Adam, AdamW, CosineLR, Optimizer, StepLR
from .trainer import Trainer
from .transfer import join, with_classifier
from .vjp import VJPS, VJPContext, register_vjp, unbroadcast, vjp_for

__all__ = ["Trainer", "SGD", "Adam", "AdamW", "StepLR", "CosineLR", "Optimizer", "CrossEntropy", "MSE",
           "BCEWithLogits", "get_loss", "accuracy", "with_classifier", "join", "VJPS", "VJPContext", "register_vjp",
           "unbroadcast", "vjp_for"]
