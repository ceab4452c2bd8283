"""``python -m geotune.study`` is the ``geotune`` command, like ``python -m geotune``."""

import sys

from geotune.study.cli import main

sys.exit(main())
