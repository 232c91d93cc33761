"""``python -m vasink.cli``: the same as the ``vasink`` command."""

import sys

from . import main

sys.exit(main())
