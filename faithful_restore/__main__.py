"""``python -m faithful_restore``: the same command line as ``faithful-restore``."""

import sys

from faithful_restore.cli import main

sys.exit(main())
