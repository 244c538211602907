"""Model factories for ``xbc prune`` tests (the digits models of the zoo)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.models import digits_cnn as _digits_cnn
from tests.models import vgg_digits as _vgg_digits

INPUT_SHAPE = (1, 1, 8, 8)


def digits_cnn():
    return _digits_cnn(seed=0)


def vgg_digits():
    return _vgg_digits(seed=0)
