"""``python -m reference``: see reference.cli."""

import sys

from reference.cli import main

sys.exit(main())
