"""``edge-bus raft serve`` (or ``python -m broker.coordination.node_main``): run one Raft node until SIGTERM.

The node serves the lock service and two-phase commit (the transaction manager
runs on every node; the leader's acts) for its group.

A new group: start every node with the same ``--peers``. A node for a group
that is already running: start it with ``--join`` (no ``--peers``) first, then
``edge-bus raft add-member --group G NODE``; until it is added it only listens,
and it never starts an election of its own. Restart it with ``--join`` too:
its log holds the membership from then on.

The broker password is read from ``EDGEBUS_BROKER_PASSWORD`` (never from argv,
which other users can read).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from broker.coordination.driver import DriverConfig, RaftDriver
from broker.session import BusConfig

__all__ = ["main", "parse_args"]

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="edge-bus raft serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", required=True)
    p.add_argument("--node", required=True)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--peers", help="a new group: comma-separated node ids, the same on every node")
    how.add_argument("--join", action="store_true",
                     help="a node for a running group: wait to be added (edge-bus raft add-member) and "
                          "learn the members from the leader")
    p.add_argument("--data", required=True, type=Path, help="directory for the node's SQLite log")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--root", default="edgebus")
    p.add_argument("--tick-ms", type=int, default=10)
    p.add_argument("--election-ticks", type=int, default=15)
    p.add_argument("--snapshot-threshold", type=int, default=5000)
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = DriverConfig(
        group=args.group, node=args.node, peers=tuple(p for p in (args.peers or "").split(",") if p),
        join=args.join, data_dir=args.data, tick_ms=args.tick_ms, election_ticks=args.election_ticks,
        snapshot_threshold=args.snapshot_threshold,
    )
    bus = BusConfig(host=args.host, port=args.port, username=args.username,
                    password=os.environ.get("EDGEBUS_BROKER_PASSWORD"), root=args.root,
                    client_id="unused", clean_start=True, keepalive=5)
    driver = RaftDriver(config, bus).start()
    gc.freeze()  # what startup allocated is long-lived: keep the collector off it
    gc.set_threshold(20_000, 50, 100)  # fewer young collections on the per-message allocation churn
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.2):
        if driver.failed is not None:
            driver.stop()
            return 1
    driver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
