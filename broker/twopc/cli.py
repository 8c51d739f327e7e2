"""``edge-bus tx run|status|list|watch|participant|recover``: two-phase commit from a shell.

Exit codes: 0 committed / done; 1 aborted, refused or not found; 2 usage,
configuration or no answer from the group; 3 the outcome is not known yet
(no majority answered in time; the group still decides it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from broker.twopc.client import TxClient
from broker.twopc.participant_driver import ParticipantDriver
from broker.twopc.participant_store import ParticipantStore
from broker.twopc.resource import Resource
from protocols.twopc import Part
from protocols.twopc.topics import TxTopics
from schemas.errors import ConfigError, CoordinationTimeout, EdgebusError

__all__ = ["tx_main"]

HELP = """\
Two-phase commit through a Raft group (edge-bus raft serve runs its nodes). The decision is in
the group's replicated log before anyone hears it, and whichever node leads finishes every
transaction: a prepared participant waits for a majority of the group, never for one process.

  edge-bus tx run --group G --part agent-a='{"release": "cam-7"}' --part agent-b=@take.json
  edge-bus tx status --group G TX_ID         what the log says (an id never begun is aborted)
  edge-bus tx list --group G                 transactions the log holds open, from the leader
  edge-bus tx watch --group G                decisions and endings as they happen (JSON lines)
  edge-bus tx participant --group G --id db-1 --store DIR --sql URL    serve a SQL participant
  edge-bus tx recover --group G --id db-1 --store DIR --sql URL       resolve its in-doubt work, exit

The broker password comes from EDGEBUS_BROKER_PASSWORD.
"""

EXIT_ABORTED = 1
EXIT_NO_ANSWER = 2
EXIT_UNKNOWN = 3


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("EDGEBUS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("EDGEBUS_PORT", "1883")))
    p.add_argument("--username", default=os.environ.get("EDGEBUS_USERNAME"))
    p.add_argument("--root", default="edgebus")
    p.add_argument("--group", required=True, help="the Raft group that manages the transactions")


def _participant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", required=True, help="this participant's id (its topic is .../tx/G/to/ID)")
    p.add_argument("--store", required=True, type=Path,
                   help="directory for the participant's durable records (keep it across restarts)")
    p.add_argument("--sql", required=True, metavar="URL",
                   help="the database (postgresql://... uses PREPARE TRANSACTION, which needs "
                        "max_prepared_transactions > 0; sqlite:///file.db keeps intent rows). Each "
                        "transaction's payload is a msgpack list of [sql, params] statements")


def tx_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-bus tx", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run one transaction and print its outcome")
    _common(run)
    run.add_argument("--part", action="append", required=True, metavar="PARTICIPANT=PAYLOAD",
                     help="a participant and its work (text, or @file for a file's bytes); repeat")
    run.add_argument("--timeout", type=float, default=5.0,
                     help="seconds before the group aborts an undecided transaction (default 5)")
    run.add_argument("--id", help="the transaction id (default: a new unique one)")
    st = sub.add_parser("status", help="what the group's log says of one transaction")
    _common(st)
    st.add_argument("tx_id")
    st.add_argument("--timeout", type=float, default=5.0)
    ls = sub.add_parser("list", help="the transactions the log holds open (the leader's retained list)")
    _common(ls)
    ls.add_argument("--wait", type=float, default=2.0, help="seconds to wait for the retained list")
    ls.add_argument("--json", action="store_true")
    w = sub.add_parser("watch", help="print decisions, endings and refused input as JSON lines")
    _common(w)
    w.add_argument("--count", type=int, default=0, help="exit after this many lines (0: never)")
    part = sub.add_parser("participant", help="serve a SQL participant until SIGTERM")
    _common(part)
    _participant_args(part)
    rec = sub.add_parser("recover", help="resolve a participant's in-doubt and prepared work, then exit")
    _common(rec)
    _participant_args(rec)
    rec.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the group")
    args = p.parse_args(argv)
    try:
        return {"run": _run, "status": _status, "list": _list, "watch": _watch,
                "participant": _participant, "recover": _recover}[args.action](args)
    except ConfigError as exc:
        print(f"edge-bus tx {args.action}: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except EdgebusError as exc:
        print(f"edge-bus tx {args.action}: {exc}", file=sys.stderr)
        return EXIT_ABORTED


def _bus(args: argparse.Namespace, client_id: str) -> BusConfig:
    return BusConfig(host=args.host, port=args.port, username=args.username,
                     password=os.environ.get("EDGEBUS_BROKER_PASSWORD"), root=args.root,
                     client_id=client_id, clean_start=True)


def _session(args: argparse.Namespace, prefix: str) -> BusSession:
    return BusSession(_bus(args, f"{prefix}-{uuid.uuid4().hex[:10]}"))


def _start(session: BusSession, prog: str) -> bool:
    session.start()
    if not session.wait_connected(5.0) or not session.wait_subscribed(5.0):
        print(f"edge-bus tx {prog}: cannot reach the broker", file=sys.stderr)
        return False
    return True


def _parts(specs: list[str]) -> list[Part]:
    parts = []
    for spec in specs:
        name, sep, payload = spec.partition("=")
        if not sep or not name:
            raise ConfigError(f"--part {spec!r}: write PARTICIPANT=PAYLOAD (PAYLOAD may be @file)")
        if payload.startswith("@"):
            try:
                data = Path(payload[1:]).read_bytes()
            except OSError as exc:
                raise ConfigError(f"--part {name}: cannot read {payload[1:]}: {exc.strerror}") from exc
        else:
            data = payload.encode()
        parts.append(Part(name, data))
    return parts


def _run(args: argparse.Namespace) -> int:
    parts = _parts(args.part)
    session = _session(args, "tx-run")
    client = TxClient(session, args.group, f"tx-cli-{uuid.uuid4().hex[:10]}")
    if not _start(session, "run"):
        return EXIT_NO_ANSWER
    try:
        outcome = client.run(parts, args.timeout, args.id)
    except CoordinationTimeout as exc:
        print(f"edge-bus tx run: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    finally:
        session.stop(flush_timeout=0)
    print(json.dumps({"tx": outcome.tx_id, "outcome": outcome.outcome.value, "reason": outcome.reason}))
    return 0 if outcome.committed else EXIT_ABORTED


def _status(args: argparse.Namespace) -> int:
    session = _session(args, "tx-status")
    client = TxClient(session, args.group, f"tx-cli-{uuid.uuid4().hex[:10]}")
    if not _start(session, "status"):
        return EXIT_NO_ANSWER
    try:
        reply = client.status(args.tx_id, args.timeout)
    except CoordinationTimeout as exc:
        print(f"edge-bus tx status: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    finally:
        session.stop(flush_timeout=0)
    print(json.dumps({"tx": reply.tx_id, "state": reply.state.value, "reason": reply.reason}))
    return 0


def _list(args: argparse.Namespace) -> int:
    got: list[dict[str, object]] = []
    arrived = threading.Event()
    session = _session(args, "tx-list")
    topics = TxTopics(session.topics, args.group)

    def on_open(msg: ReceivedMessage) -> None:
        try:
            got.append(json.loads(msg.payload))
        except ValueError:
            return
        arrived.set()

    session.subscribe(topics.open_transactions(), on_open)
    if not _start(session, "list"):
        return EXIT_NO_ANSWER
    try:
        arrived.wait(args.wait)
    finally:
        session.stop(flush_timeout=0)
    if not got:
        print(f"edge-bus tx list: no list from group {args.group!r} (no leader has run a transaction "
              f"yet, or the group is not running)", file=sys.stderr)
        return EXIT_ABORTED
    body = got[-1]
    if args.json:
        print(json.dumps(body))
        return 0
    rows = body.get("open")
    rows = rows if isinstance(rows, list) else []
    now = time.time_ns() // 1_000_000
    print(f"{'transaction':<40} {'state':<8} {'age':>7}  participants / reason")
    for r in rows:
        age = (now - int(r.get("began_ms", now))) / 1000
        print(f"{r.get('tx')!s:<40} {r.get('state')!s:<8} {age:>6.1f}s  "
              f"{', '.join(map(str, r.get('participants', [])))}"
              f"{'  (' + str(r.get('reason')) + ')' if r.get('reason') else ''}")
    print(f"{len(rows)} open ({body.get('pending')} undecided), as leader {body.get('leader')} saw them"
          f"{' (truncated)' if body.get('truncated') else ''}")
    return 0


def _watch(args: argparse.Namespace) -> int:
    lines: list[int] = [0]
    done = threading.Event()
    session = _session(args, "tx-watch")
    topics = TxTopics(session.topics, args.group)

    def show(msg: ReceivedMessage) -> None:
        print(msg.payload.decode("utf-8", "replace"), flush=True)
        lines[0] += 1
        if args.count and lines[0] >= args.count:
            done.set()

    session.subscribe(topics.events(), show)
    session.subscribe(topics.dead_letters(), show)
    if not _start(session, "watch"):
        return EXIT_NO_ANSWER
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        session.stop(flush_timeout=0)
    return 0


def _sql_resource(args: argparse.Namespace) -> Resource:
    from broker.twopc.sql_resource import SqlResource  # SQLAlchemy only when asked
    from broker.twopc.sql_work import statements_work

    return SqlResource(args.sql, args.id, statements_work)


def _serve(args: argparse.Namespace, prefix: str) -> tuple[BusSession, ParticipantDriver, ParticipantStore]:
    resource = _sql_resource(args)
    store = ParticipantStore(args.store / f"participant-{args.group}-{args.id}.db")
    session = _session(args, prefix)
    driver = ParticipantDriver(session, args.group, args.id, resource, store)
    return session, driver, store


def _participant(args: argparse.Namespace) -> int:
    session, driver, store = _serve(args, f"tx-part-{args.id}")
    driver.start()
    if not _start(session, "participant"):
        driver.stop()
        return EXIT_NO_ANSWER
    print(json.dumps({"participant": args.id, "group": args.group, "ready": True}), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(0.2):
            if driver.failed is not None:
                print(f"edge-bus tx participant: stopped: {driver.failed}", file=sys.stderr)
                return EXIT_ABORTED
    finally:
        driver.stop()
        session.stop(flush_timeout=1)
        store.close()
    return 0


def _recover(args: argparse.Namespace) -> int:
    session, driver, store = _serve(args, f"tx-recover-{args.id}")
    driver.start()
    if not _start(session, "recover"):
        driver.stop()
        return EXIT_NO_ANSWER
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            if driver.failed is not None:
                print(f"edge-bus tx recover: stopped: {driver.failed}", file=sys.stderr)
                return EXIT_ABORTED
            left = driver.in_doubt() or tuple(driver.resource.prepared_ids())
            if not left and driver.recovered:
                resolved = [{"tx": t, "outcome": o.value} for t, o in driver.applied]
                print(json.dumps({"participant": args.id, "in_doubt": [], "resolved": resolved}))
                return 0
            time.sleep(0.1)
        print(f"edge-bus tx recover: still in doubt after {args.timeout:g} s: "
              f"{', '.join(driver.in_doubt() or tuple(driver.resource.prepared_ids()))} (is a majority "
              f"of group {args.group!r} running?)", file=sys.stderr)
        return EXIT_UNKNOWN
    finally:
        driver.stop()
        session.stop(flush_timeout=1)
        store.close()
