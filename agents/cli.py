"""`edge-agent`: run the agent on a device, or check its configuration.

Exit codes: 0 stopped cleanly; 1 runtime failure; 2 usage or configuration error;
75 (EX_TEMPFAIL) stopped cleanly to be restarted: an over-the-air update switched
``{prefix}/current`` to another slot (or back), and systemd's ``Restart=on-failure``
starts the agent from there.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from broker.cli_support import run_tool, setup_logging

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="The edgebus agent: publishes this device's metrics (and camera detections) "
                    "to the broker, answers commands, announces itself to Home Assistant.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  edge-agent run --config agent.toml        run until SIGTERM / Ctrl-C\n"
               "  edge-agent check-config --config agent.toml\n"
               "A commented example configuration is config/agent.example.toml.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,check-config}")
    run = sub.add_parser("run", help="run the agent until SIGTERM or Ctrl-C",
                         description="Run the agent. Under systemd (Type=notify) it reports "
                                     "readiness and feeds the watchdog.")
    run.add_argument("--config", type=Path, required=True, help="agent.toml")
    run.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="on shutdown, how long to wait for queued messages to reach the broker "
                          "(what is left stays on disk for the next start; default 10)")
    check = sub.add_parser("check-config", help="validate agent.toml and print what it means")
    check.add_argument("--config", type=Path, required=True, help="agent.toml")
    return parser


def _check(path: Path) -> int:
    from agents.assembly import describe, load_config

    print(describe(load_config(path)))
    return 0


def _run(path: Path, stop_timeout: float) -> int:
    from agents.assembly import build_agent, load_config

    agent = build_agent(load_config(path))

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run(stop_timeout=stop_timeout)
    if agent.exit_code:
        logging.getLogger(__name__).warning("exiting with %d: restart me (an update switched slots)",
                                            agent.exit_code)
    return agent.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_tool("edge-agent", lambda: _check(args.config) if args.command == "check-config"
                    else _run(args.config, args.stop_timeout))


if __name__ == "__main__":
    raise SystemExit(main())
