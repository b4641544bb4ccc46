"""`python -m dispatch.serve MODEL [options]`, the same as `python -m dispatch serve MODEL [options]`."""

import sys

from dispatch.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
