"""``python -m stream`` is the ``menet`` command."""
import sys

from .cli import main

sys.exit(main())
