"""``lae-vbr``: compress images to ``.lae`` files, decompress them to PNG, inspect them.

Exit codes: 0 success; 1 the data could not be coded (corrupt, truncated or foreign file,
unreadable image, write failure); 2 the command cannot run as given (bad arguments or option
values, missing input, checkpoint or output folder). Every failure is one line on stderr.

A shell over the codec's request API (:mod:`lae_vbr.codec.request`): :mod:`.parser` (options),
:mod:`.commands` (compress, decompress, info), :mod:`.folder` (a folder of images),
:mod:`.session` (the target, the rate check, the model) and :mod:`.terminal` (streams,
messages, progress).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lae_vbr.errors import LaeVbrError

from .parser import build_parser
from .terminal import FAILED, OK, USAGE, UsageError, fail, gc_paused

__all__ = ["FAILED", "OK", "USAGE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message (or the help)
        return exit_.code if isinstance(exit_.code, int) else USAGE
    try:
        with gc_paused():
            return args.run(args)
    except UsageError as err:
        return fail(err, USAGE)
    except OSError as err:
        detail = f"{err.strerror}: {err.filename}" if err.strerror and err.filename else err
        return fail(detail, FAILED)
    except LaeVbrError as err:  # a bad file, image or model: ContainerError, CodecError, ...
        return fail(err, FAILED)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as err:  # a crash in model code must still not print a traceback
        return fail(f"unexpected {type(err).__name__}: {err}", FAILED)


if __name__ == "__main__":
    sys.exit(main())
