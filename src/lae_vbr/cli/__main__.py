"""``python -m lae_vbr.cli``: the ``lae-vbr`` command."""

import sys

from lae_vbr.cli import main

sys.exit(main())
