"""python -m dispatch MODEL [options] — see dispatch.cli."""

import sys

from dispatch.cli import main

sys.exit(main())
