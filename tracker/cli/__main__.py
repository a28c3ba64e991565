"""``python -m tracker.cli``: the ``wattprint`` command."""

import sys

from tracker.cli.main import main

sys.exit(main())
