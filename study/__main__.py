"""``python -m study`` is the ``geotune`` command."""
import sys

from study.cli import main

sys.exit(main())
