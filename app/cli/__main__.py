"""``python -m app.cli``: the same as the ``crystal-designer`` command."""

import sys

from app.cli import main

sys.exit(main())
