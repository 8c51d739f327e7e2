"""`edge-flash`: command-line entry point."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; only help exists until the feature lands."""
    return argparse.ArgumentParser(
        prog="edge-flash",
        description="Build agent bundles, seed boot images and publish over-the-air updates.",
        epilog="Not implemented yet in this release: only --help works.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 2
