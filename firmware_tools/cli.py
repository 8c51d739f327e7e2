"""`edge-flash`: bundles, boot-image seeds and signing keys for devices.

The commands live in :mod:`firmware_tools.commands`; this entry point only
checks that the ``flash`` extra (pyfatfs, cryptography) is installed, so a
device with a plain agent install gets an instruction rather than a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from broker.cli_support import EXIT_USAGE

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from firmware_tools import commands
    except ImportError as exc:
        print(f"edge-flash needs the flash extra ({exc}); install it with: "
              "pip install 'edgebus[flash]'", file=sys.stderr)
        return EXIT_USAGE
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
