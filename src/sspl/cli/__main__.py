"""``python -m sspl.cli``: the ``sspl`` command, as ``torchrun -m sspl.cli train ...`` launches it."""

import sys

from . import main

sys.exit(main())
