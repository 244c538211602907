"""Third-party CIFAR-shaped architectures from pytorchcv (a dev dependency) for ``xbc prune`` (issue 16).

Each factory returns a freshly initialised model (``torch.manual_seed(0)`` before construction, no
weights downloaded) for 3x32x32 inputs and 10 classes, usable as ``FILE.py:FACTORY``::

    xbc prune examples/pytorchcv_models.py:resnet20 --target isaac-like --data digits:32x32x3 \\
        --train-epochs 30 -o pruned-resnet20

One family each: residual (``resnet20``), squeeze-and-excitation (``seresnet20``), dense
(``densenet40``) and depthwise-separable (``mobilenetv2``; ``mobilenetv3``, whose depthwise outputs pass
squeeze-and-excitation gates). docs/pruning.md has the measured runs.
"""

from __future__ import annotations

import torch

#: The input every factory's model takes (``xbc compile`` reads it when --input-shape is absent).
INPUT_SHAPE = (1, 3, 32, 32)
#: Seed of the random initialisation (``xbc prune --seed`` seeds the data split and the training).
INIT_SEED = 0


def resnet20() -> torch.nn.Module:
    """ResNet-20 for CIFAR-10 (3 stages of 3 basic blocks, 16/32/64 channels)."""
    from pytorchcv.models.resnet_cifar import resnet20_cifar10

    torch.manual_seed(INIT_SEED)
    return resnet20_cifar10(pretrained=False)


def seresnet20() -> torch.nn.Module:
    """SE-ResNet-20 for CIFAR-10: ResNet-20 with a squeeze-and-excitation gate in every block."""
    from pytorchcv.models.seresnet_cifar import seresnet20_cifar10

    torch.manual_seed(INIT_SEED)
    return seresnet20_cifar10(pretrained=False)


def densenet40() -> torch.nn.Module:
    """DenseNet-40 (k = 12, BC: bottleneck 1x1 convolutions and compressed transitions) for CIFAR-10."""
    from pytorchcv.models.densenet_cifar import densenet40_k12_bc_cifar10

    torch.manual_seed(INIT_SEED)
    return densenet40_k12_bc_cifar10(pretrained=False)


def mobilenetv2() -> torch.nn.Module:
    """MobileNetV2 at width 0.5 for 32x32 inputs and 10 classes; the 7x7 final pool made adaptive (the
    map is 1x1 at 32x32)."""
    from pytorchcv.models.mobilenetv2 import mobilenetv2_wd2

    torch.manual_seed(INIT_SEED)
    model = mobilenetv2_wd2(pretrained=False, in_size=(32, 32), num_classes=10)
    model.features.final_pool = torch.nn.AdaptiveAvgPool2d(1)
    return model


def mobilenetv3() -> torch.nn.Module:
    """MobileNetV3-Small at width 0.35 (hard-swish, squeeze-and-excitation gates on the depthwise outputs)
    for 32x32 inputs and 10 classes; the 7x7 final pool made adaptive."""
    from pytorchcv.models.mobilenetv3 import mobilenetv3_small_w7d20

    torch.manual_seed(INIT_SEED)
    model = mobilenetv3_small_w7d20(pretrained=False, in_size=(32, 32), num_classes=10)
    model.features.final_pool = torch.nn.AdaptiveAvgPool2d(1)
    return model
