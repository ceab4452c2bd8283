"""``python -m geotune`` is the ``geotune`` command."""

import sys

from geotune.study.cli import main

sys.exit(main())
