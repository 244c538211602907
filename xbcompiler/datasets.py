"""Real data that ships inside a package: scikit-learn's 8x8 handwritten digits, and a small trainer.

The digits come at any input size and channel count (:func:`digits` with ``size``/``channels``, or a
``digits:HxWxC`` spec through :func:`digits_from_spec`), so third-party CIFAR- or ImageNet-shaped
architectures train on real data offline. Nothing is downloaded. Needs scikit-learn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .diagnostics import CompileError


@dataclass(frozen=True)
class Split:
    """Train/test tensors: images ``[n, C, H, W]`` in [0, 1] (``[n, 1, 8, 8]`` as shipped), integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass(frozen=True)
class DigitsShape:
    """Input shape of the digits images: ``height x width``, ``channels`` copies of the grey image."""

    height: int = 8
    width: int = 8
    channels: int = 1

    def __str__(self) -> str:
        return f"digits:{self.height}x{self.width}x{self.channels}"


#: Largest height or width :func:`digits_shape` accepts (1,797 images of 3 x 512 x 512 are 5.6 GB).
MAX_SIDE = 512
_SPEC = re.compile(r"digits(?::(\d+)x(\d+)(?:x(\d+))?)?")


def digits_shape(spec: str) -> DigitsShape:
    """Parse ``digits``, ``digits:HxW`` or ``digits:HxWxC`` (XB003 on anything else)."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise CompileError("XB003", f"bad data spec {spec!r}: expected digits, digits:HxW or digits:HxWxC",
                           hint="e.g. --data digits:32x32x3 for CIFAR-shaped models")
    h, w, c = (int(v) if v is not None else d for v, d in zip(match.groups(), (8, 8, 1)))
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and 1 <= c <= 64):
        raise CompileError("XB003", f"bad data spec {spec!r}: height and width must lie in [1, {MAX_SIDE}], "
                                    f"channels in [1, 64]", hint="e.g. --data digits:32x32x3")
    return DigitsShape(h, w, c)


def reshape_images(x: torch.Tensor, shape: DigitsShape) -> torch.Tensor:
    """``[n, 1, h, w]`` images in [0, 1] resized bilinearly to ``shape`` and repeated over its channels."""
    if tuple(x.shape[-2:]) != (shape.height, shape.width):
        x = F.interpolate(x, size=(shape.height, shape.width), mode="bilinear", align_corners=False,
                          antialias=shape.height < x.shape[-2] or shape.width < x.shape[-1]).clamp(0.0, 1.0)
    return x.repeat(1, shape.channels, 1, 1).contiguous()


def digits(seed: int = 0, test_fraction: float = 0.25, *, shape: DigitsShape = DigitsShape()) -> Split:
    """The 1,797 digits images in a seeded, stratified split, at ``shape`` (8x8x1 as shipped)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise CompileError("XB005", "the digits data set needs scikit-learn", hint="pip install 'xbcompiler[data]'") from None
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, data.target, test_size=test_fraction, random_state=seed,
                                          stratify=data.target)
    return Split(reshape_images(torch.from_numpy(xtr), shape), torch.from_numpy(ytr).long(),
                 reshape_images(torch.from_numpy(xte), shape), torch.from_numpy(yte).long())


def digits_from_spec(spec: str, seed: int = 0) -> Split:
    """:func:`digits` at the shape of a ``digits[:HxW[xC]]`` spec (:func:`digits_shape`)."""
    return digits(seed, shape=digits_shape(spec))


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
