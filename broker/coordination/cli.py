"""CLI entry points for ``edge-bus lock ...`` and ``edge-bus raft status`` (the lead wires them in).

    lock_main(["--port", "1883", "--group", "site", "acquire", "camera-7/ptz", "--seconds", "30"])
    lock_main([... "hold", "camera-7/ptz", "--", "ptz-move", "left"])   # token in $EDGEBUS_LOCK_TOKEN
    lock_main([... "release", "camera-7/ptz", "--session", "lock-ab12", "--token", "42"])
    raft_status_main(["--port", "1883", "--group", "site"])

The broker password comes from ``EDGEBUS_BROKER_PASSWORD``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

from broker.coordination.errors import CoordinationError
from broker.coordination.lock_client import LockClient
from broker.coordination.topics import CoordinationTopics
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from protocols.locks import LockStatus, Release

__all__ = ["lock_main", "raft_status_main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--root", default="edgebus")
    p.add_argument("--group", required=True)


def _bus(args: argparse.Namespace, client_id: str) -> BusConfig:
    return BusConfig(host=args.host, port=args.port, username=args.username,
                     password=os.environ.get("EDGEBUS_BROKER_PASSWORD"), root=args.root,
                     client_id=client_id, clean_start=True)


def lock_main(argv: list[str] | None = None) -> int:
    """``edge-bus lock acquire|hold|release``; exit 0 on success, 1 if the lock was not had, 2 on errors."""
    p = argparse.ArgumentParser(prog="edge-bus lock")
    _common(p)
    p.add_argument("--ttl-ms", type=int, default=5000)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the lock")
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("acquire", help="acquire, print session and token, hold for --seconds")
    a.add_argument("name")
    a.add_argument("--seconds", type=float, default=0.0, help="0: until interrupted")
    h = sub.add_parser("hold", help="run a command while holding the lock")
    h.add_argument("name")
    h.add_argument("command", nargs=argparse.REMAINDER)
    r = sub.add_parser("release", help="release a lock held by --session")
    r.add_argument("name")
    r.add_argument("--session", required=True)
    r.add_argument("--token", type=int, required=True)
    args = p.parse_args(argv)
    try:
        if args.action == "release":
            return _release(args)
        with LockClient.connect(_bus(args, "unused"), args.group, ttl_ms=args.ttl_ms) as client:
            token = client.acquire(args.name, timeout=args.timeout)
            print(json.dumps({"lock": args.name, "session": client.session_id, "token": token}), flush=True)
            if args.action == "hold":
                command = [c for c in args.command if c != "--"]
                env = {**os.environ, "EDGEBUS_LOCK_TOKEN": str(token), "EDGEBUS_LOCK_NAME": args.name}
                rc = subprocess.call(command, env=env) if command else 0
                client.release(args.name, token)
                return rc
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait(args.seconds if args.seconds > 0 else None)
            client.release(args.name, token)
            return 0
    except CoordinationError as exc:
        print(f"edge-bus lock: {exc}", file=sys.stderr)
        return 1


def _release(args: argparse.Namespace) -> int:
    from broker.coordination.client import RaftClient
    from broker.coordination.group_state import decode_lock_result
    from protocols.locks import encode_command

    session = BusSession(_bus(args, f"{args.session}-rel"))
    raft = RaftClient(session, args.group, args.session)
    session.start()
    try:
        reply = raft.request("lock", encode_command(Release(args.session, args.name, args.token)))
        result = decode_lock_result(reply.result)
        print(json.dumps({"lock": args.name, "status": result.status.value}))
        return 0 if result.status is LockStatus.RELEASED else 1
    finally:
        session.stop(flush_timeout=1.0)


def raft_status_main(argv: list[str] | None = None) -> int:
    """``edge-bus raft status``: every node's last published role/term/leader/commit, one per line."""
    p = argparse.ArgumentParser(prog="edge-bus raft status")
    _common(p)
    p.add_argument("--wait", type=float, default=1.0, help="seconds to collect retained statuses")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    seen: dict[str, dict[str, object]] = {}
    lock = threading.Lock()
    session = BusSession(_bus(args, f"raft-status-{os.getpid()}"))
    topics = CoordinationTopics(session.topics, args.group)

    def on_status(msg: ReceivedMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with lock:
            seen[str(body.get("node"))] = body

    session.subscribe(topics.all_node_status(), on_status)
    session.start()
    try:
        if not session.wait_connected(5.0):
            print("edge-bus raft status: cannot reach the broker", file=sys.stderr)
            return 2
        time.sleep(args.wait)
    finally:
        session.stop(flush_timeout=0)
    now_ms = time.time_ns() // 1_000_000
    if args.json:
        print(json.dumps(seen, sort_keys=True))
        return 0 if seen else 1
    print(f"{'node':<12}{'role':<15}{'term':>6}{'commit':>9}{'applied':>9}  leader       age")
    for name in sorted(seen):
        s = seen[name]
        age = (now_ms - int(str(s.get("time_ms", now_ms)))) / 1000
        print(f"{name:<12}{s.get('role')!s:<15}{s.get('term')!s:>6}{s.get('commit')!s:>9}"
              f"{s.get('applied')!s:>9}  {s.get('leader')!s:<12} {age:.1f}s")
    return 0 if seen else 1
