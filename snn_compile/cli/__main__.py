"""``python -m snn_compile.cli``: the same as the ``snn-compile`` command."""

import sys

from snn_compile.cli import main

sys.exit(main())
