"""``python -m arcoforge``: the same as the ``arcoforge`` command."""

import sys

from arcoforge.cli import main

sys.exit(main())
