"""`edge-agent`: command-line entry point."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; only help exists until the feature lands."""
    return argparse.ArgumentParser(
        prog="edge-agent",
        description="Run the edgebus agent on a device (Raspberry Pi, Jetson, any Linux box).",
        epilog="Not implemented yet in this release: only --help works.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 2
