"""``python -m lae_vbr``: the ``lae-vbr`` command (for environments without its script)."""

import sys

from lae_vbr.cli import main

if __name__ == "__main__":
    sys.exit(main())
