"""``python -m throttle``: the same as the ``throttle`` command."""

import sys

from throttle.cli import main

sys.exit(main())
