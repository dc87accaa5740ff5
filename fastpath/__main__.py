"""``python -m fastpath``: see fastpath.cli."""

import sys

from fastpath.cli import main

if __name__ == "__main__":
    sys.exit(main())
