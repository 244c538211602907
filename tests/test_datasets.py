"""The bundled digits at any input size and channel count (``--data digits:HxWxC``)."""

from __future__ import annotations

import pytest
import torch

from xbcompiler.datasets import DigitsShape, digits, digits_from_spec, digits_shape, reshape_images
from xbcompiler.diagnostics import CompileError


@pytest.mark.parametrize("spec,shape", [("digits", (8, 8, 1)), ("digits:32x32", (32, 32, 1)),
                                        ("digits:32x32x3", (32, 32, 3)), ("digits:5x7x2", (5, 7, 2)),
                                        ("digits:64x48x3", (64, 48, 3))])
def test_spec_gives_images_of_that_shape_in_unit_range(spec, shape):
    h, w, c = shape
    d = digits_from_spec(spec, seed=0)
    assert tuple(d.x_train.shape[1:]) == (c, h, w) and tuple(d.x_test.shape[1:]) == (c, h, w)
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.x_train) == len(d.y_train)
    assert d.x_train.dtype == torch.float32 and 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert float(d.x_train.max()) > 0.5  # not washed out
    assert torch.equal(d.x_train[:, :1].expand_as(d.x_train), d.x_train)  # channels are copies


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = digits_from_spec("digits:16x16x3", 0), digits_from_spec("digits:16x16x3", 0), digits_from_spec(
        "digits:16x16x3", 1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)


def test_shipped_size_is_unchanged_and_labels_follow_the_images():
    plain, resized = digits(0), digits(0, shape=DigitsShape(24, 24, 3))
    assert torch.equal(plain.y_train, resized.y_train)
    assert torch.equal(digits_from_spec("digits", 0).x_train, plain.x_train)
    # resized back to 8x8, each image is nearest to its own original (bilinear, no shift, no mix-up)
    back = reshape_images(resized.x_train[:200, :1], DigitsShape(8, 8, 1)).flatten(1)
    nearest = torch.cdist(back, plain.x_train[:200].flatten(1)).argmin(1)
    assert float((nearest == torch.arange(200)).float().mean()) > 0.95


@pytest.mark.parametrize("spec", ["digits:0x8x1", "digits:abc", "digits:8x8x0", "digits:8", "digits:8x8x3x1",
                                  "digits:-8x8", "mnist", "digits:100000x8"])
def test_bad_specs_are_xb003(spec):
    with pytest.raises(CompileError) as err:
        digits_shape(spec)
    assert err.value.code == "XB003" and spec in str(err.value)
