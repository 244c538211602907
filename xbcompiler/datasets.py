"""Real data that ships inside a package: scikit-learn's 8x8 handwritten digits, and a small trainer.

Nothing is downloaded. Needs the ``data`` extra (scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .diagnostics import CompileError


@dataclass(frozen=True)
class Split:
    """Train/test tensors: images ``[n, 1, 8, 8]`` scaled to [0, 1], integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits(seed: int = 0, test_fraction: float = 0.25) -> Split:
    """The 1,797 digits images in a seeded, stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise CompileError("XB005", "the digits data set needs scikit-learn", hint="pip install 'xbcompiler[data]'") from None
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, data.target, test_size=test_fraction, random_state=seed,
                                          stratify=data.target)
    return Split(torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xte), torch.from_numpy(yte).long())


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled mini-batches (seeded)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]]) for i in range(0, len(x), batch_size)]


def train_classifier(model: torch.nn.Module, split: Split, *, epochs: int = 30, lr: float = 0.05,
                     batch_size: int = 64, seed: int = 0) -> torch.nn.Module:
    """Plain SGD with momentum and cosine decay; returns the model in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        model.train()
        for xb, yb in batches(split.x_train, split.y_train, batch_size, seed + epoch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(predict, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent of ``predict`` (a model, a compiled model or any callable on a batch)."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int((predict(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x)
