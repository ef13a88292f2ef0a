"""``python -m lightclip`` is the ``lightclip`` command."""

import sys

from .cli import main

sys.exit(main())
