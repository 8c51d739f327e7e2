"""CLI entry points for ``edge-bus lock ...`` and ``edge-bus raft ...`` (the lead wires them in).

    lock_main(["--port", "1883", "--group", "site", "acquire", "camera-7/ptz", "--seconds", "30"])
    lock_main([... "hold", "camera-7/ptz", "--", "ptz-move", "left"])   # token in $EDGEBUS_LOCK_TOKEN
    lock_main([... "release", "camera-7/ptz", "--session", "lock-ab12", "--token", "42"])
    raft_main(["status", "--port", "1883", "--group", "site"])       # raft_status_main(argv) = the same
    raft_main(["add-member", "--group", "site", "n4"])               # after starting n4 with --join
    raft_main(["remove-member", "--group", "site", "n3"])
    raft_main(["transfer", "--group", "site", "--to", "n2"])         # no --to: any caught-up follower

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
import uuid

from broker.coordination.client import RaftClient
from broker.coordination.lock_client import LockClient
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from protocols.coordination.topics import CoordinationTopics
from protocols.locks import LockStatus, Release
from schemas.errors import AdminRefused, CoordinationError

__all__ = ["lock_main", "raft_main", "raft_status_main"]

RAFT_HELP = """\
Operate a Raft group (the lock service's replicas). Changes go to the leader, one at a time, and
"ok" means committed. Every command may be repeated: one that finds its change done says ok.

Add a node (grow, or replace one):
  1. start it for the running group, with no peers of its own:
       edge-bus raft serve --group G --node n4 --join --data DIR ...
  2. edge-bus raft add-member --group G n4
  3. edge-bus raft status --group G   (n4 is a member and its "applied" reaches the others')
Replace a dead node: remove it first (below), then add the new one: the quorum never counts the dead one.

Remove a node:
  - a dead one: edge-bus raft remove-member --group G n3
  - a live one: remove it, then stop its process (pre-vote keeps it from disrupting the rest)
  - the leader: refused; edge-bus raft transfer --group G  first, then remove it.

Maintenance of the leader's host: edge-bus raft transfer --group G [--to NODE], then stop it.
A majority of the members must be running for any change to commit.
"""



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
    from protocols.coordination.group_state import decode_lock_result
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


def raft_main(argv: list[str] | None = None) -> int:
    """``edge-bus raft serve|status|add-member|remove-member|transfer``: 0 done, 1 refused, 2 no answer."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # run a node in this process (the options are node_main's)
        from broker.coordination import node_main

        return node_main.main(argv[1:])
    p = argparse.ArgumentParser(prog="edge-bus raft", description=RAFT_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("serve", add_help=False,
                   help="run one node of a group until SIGTERM (edge-bus raft serve --help for options)")
    st = sub.add_parser("status", help="every node's role, term, commit and leader, and who is a member")
    _status_args(st)
    a = sub.add_parser("add-member", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="make NODE a voting member (start it with node_main --join first)",
                       description="Make NODE a voting member. Start it FIRST with node_main --join: "
                                   "the quorum grows at once,\nso a member that is not running weakens the "
                                   "group.")
    r = sub.add_parser("remove-member", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="remove NODE (dead or alive); the leader: transfer first",
                       description="Remove NODE from the group (a live one: stop its process "
                                   "afterwards).\nThe leader cannot be removed: run `edge-bus raft "
                                   "transfer` first.")
    t = sub.add_parser("transfer", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="hand leadership to --to NODE (default: the most caught-up follower)",
                       description="Move leadership before maintenance of the leader's host, or before "
                                   "removing the leader.\nProposals pause for the hand-over (at most an "
                                   "election timeout); clients retry them.")
    for q in (a, r):
        _common(q)
        q.add_argument("node", help="the node id")
        q.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the commit")
    _common(t)
    t.add_argument("--to", help="the node to lead (a member); default: the most caught-up follower")
    t.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the new leader")
    args = p.parse_args(argv)
    if args.action == "status":
        return _status(args)
    return _admin(args)


def _admin(args: argparse.Namespace) -> int:
    prog = f"edge-bus raft {args.action}"
    session = BusSession(_bus(args, f"raft-admin-{uuid.uuid4().hex[:10]}"))
    client = RaftClient(session, args.group, retry_interval=0.25, timeout=args.timeout)
    session.start()
    try:
        if not session.wait_connected(5.0):
            print(f"{prog}: cannot reach the broker", file=sys.stderr)
            return 2
        if args.action == "transfer":
            leader = client.transfer_leadership(args.to)
            out: dict[str, object] = {"leader": leader}
        else:
            change = client.add_member if args.action == "add-member" else client.remove_member
            out = {"node": args.node, "members": list(change(args.node))}
        print(json.dumps({"group": args.group, "action": args.action, **out}), flush=True)
        return 0
    except AdminRefused as exc:
        print(f"{prog}: refused: {exc.reason}", file=sys.stderr)
        return 1
    except CoordinationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    finally:
        session.stop(flush_timeout=0)


def _status_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--wait", type=float, default=1.0, help="seconds to collect retained statuses")
    p.add_argument("--json", action="store_true")


def raft_status_main(argv: list[str] | None = None) -> int:
    """``edge-bus raft status``: every node's last published role/term/leader/commit, one per line."""
    p = argparse.ArgumentParser(prog="edge-bus raft status")
    _status_args(p)
    return _status(p.parse_args(argv))


def _status(args: argparse.Namespace) -> int:
    seen: dict[str, dict[str, object]] = {}
    lock = threading.Lock()
    session = BusSession(_bus(args, f"raft-status-{os.getpid()}"))
    topics = CoordinationTopics(session.topics, args.group)

    def on_status(msg: ReceivedMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return  # an empty payload clears a removed node's status
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
    # The members as the leader of the highest term sees them (a joiner not yet added has none).
    leaders = [s for s in seen.values() if s.get("role") == "leader"]
    best = max(leaders, key=lambda s: int(str(s.get("term", 0))), default=None)
    listed = best.get("members") if best is not None else None
    members = {str(m) for m in listed} if isinstance(listed, list) else None
    print(f"{'node':<12}{'role':<15}{'term':>6}{'commit':>9}{'applied':>9}  {'leader':<12} {'member':<7} age")
    for name in sorted(seen):
        s = seen[name]
        age = (now_ms - int(str(s.get("time_ms", now_ms)))) / 1000
        member = "?" if members is None else ("yes" if name in members else "no")
        print(f"{name:<12}{s.get('role')!s:<15}{s.get('term')!s:>6}{s.get('commit')!s:>9}"
              f"{s.get('applied')!s:>9}  {s.get('leader')!s:<12} {member:<7} {age:.1f}s")
    if members is not None:
        who = best.get("node") if best is not None else "?"
        print(f"members: {', '.join(sorted(members))} (as leader {who} sees them)")
    return 0 if seen else 1
