"""``python -m xbcompiler.cli``: the same as the ``xbc`` console script."""

import sys

from . import main

sys.exit(main())
