"""What every edgebus command-line tool does the same way: logging and exit codes.

Exit codes, for scripts and systemd alike: 0 success; 1 a runtime failure
(broker unreachable or refusing, an I/O error); 2 a usage or configuration
error (bad flag, bad file, bad input: the operator must change something).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from schemas.errors import BusError, EdgebusError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "run_tool", "setup_logging"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # amqtt narrates every connection at INFO; keep its warnings, drop the chatter.
    logging.getLogger("amqtt").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_tool(prog: str, action: Callable[[], int]) -> int:
    """Run ``action``; turn edgebus and OS errors into one stderr line and an exit code."""
    try:
        return action()
    except BusError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except EdgebusError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
