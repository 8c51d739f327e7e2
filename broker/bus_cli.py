"""`edge-bus`: mosquitto_sub/pub for edgebus, decoding envelopes to JSON lines, and ``cmd``.

``edge-bus cmd DEVICE NAME [KEY=VALUE ...]`` builds the command record an
agent expects (:class:`~schemas.command.Command`: device, name, a fresh id,
the time and ``args``), sends it as an envelope on ``{root}/{DEVICE}/cmd/{NAME}``
and prints the agent's JSON reply, which it reads as it passes by on the
device's retained ``state/last_command``.

Exit codes: 0 success; 1 runtime failure (broker unreachable, refused, a
command answered ``"ok": false``); 2 usage or configuration error; 27 ``sub -W``
or ``cmd`` timed out (as mosquitto_sub).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from broker.cli_support import EXIT_FAILURE, run_tool, setup_logging
from broker.credentials import load_credentials
from broker.payload_view import view_payload
from broker.router import ReceivedMessage
from broker.session import ENVELOPE_CONTENT_TYPE, BusConfig, BusSession
from schemas.command import Command
from schemas.envelope import EnvelopeCodec
from schemas.errors import CodecError, ConfigError, TopicError
from schemas.messages import encode_record
from schemas.topics import DEFAULT_ROOT, TopicTree

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_TIMEOUT = 27
DEFAULT_CREDENTIALS = Path("data/broker/credentials.json")
#: Where an agent answers a command sent without reply_to (agents/commands/dispatcher.py).
LAST_COMMAND_STATE = "last_command"


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("-H", "--host", default=os.environ.get("EDGEBUS_HOST", "127.0.0.1"),
                   help="broker host (env EDGEBUS_HOST; default 127.0.0.1)")
    g.add_argument("-p", "--port", type=int, default=int(os.environ.get("EDGEBUS_PORT", "1883")),
                   help="broker port (env EDGEBUS_PORT; default 1883)")
    g.add_argument("-u", "--username", default=os.environ.get("EDGEBUS_USERNAME"),
                   help="user name (env EDGEBUS_USERNAME)")
    g.add_argument("-P", "--password", default=os.environ.get("EDGEBUS_PASSWORD"),
                   help="password (env EDGEBUS_PASSWORD)")
    g.add_argument("--credentials", type=Path, default=None,
                   help="read user name and password from an embedded broker's credentials.json "
                        f"(used automatically when ./{DEFAULT_CREDENTIALS} exists and no -u is given)")
    g.add_argument("-V", "--protocol", choices=["auto", "5", "3.1.1"], default="auto",
                   help="MQTT version (default: try 5, fall back to 3.1.1)")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up when no connection is made within this time (default 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-bus",
        description="Publish to and subscribe from an edgebus broker. Envelopes (the compressed "
                    "binary records agents send) are decoded to JSON; other payloads are shown "
                    "as they are.",
        epilog="examples:\n"
               "  edge-bus sub 'edgebus/+/metrics'           decoded metrics batches, one per line\n"
               "  edge-bus sub -v 'edgebus/#'                everything, each line led by its topic\n"
               "  edge-bus sub --json -C 1 'edgebus/+/birth' one message as a JSON object, then exit\n"
               "  edge-bus sub -v 'edgebus/cam-1/state/door_health'   camera door's stream health\n"
               "  edge-bus cmd cam-1 rebirth                 ask cam-1 to publish its birth again\n"
               "  edge-bus cmd cam-1 assign camera=door source=rtsp://10.0.0.7/stream fps=5\n"
               "  edge-bus pub -t edgebus/cam-1/state/note -m 'lens cleaned' -r   a retained note\n"
               "  edge-bus lock --group locks hold camera-7/ptz -- ./move.sh   a fenced lock (Raft group)\n"
               "  edge-bus raft serve --group locks --node n1 --peers n1,n2,n3 --data DIR   run a node\n"
               "  edge-bus raft status --group locks          each node's role, term, commit, members\n"
               "  edge-bus tx run --group locks --part a=@work.json --part b=@work.json   two-phase commit\n"
               "  edge-bus raft add-member --group locks n4   grow the group (start n4 with --join first)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{sub,pub,cmd,lock,raft,tx}")

    s = sub.add_parser("sub", help="subscribe and print messages",
                       description="Subscribe to one or more topic filters and print each message "
                                   "on one line.")
    s.add_argument("topics", nargs="*", metavar="TOPIC", help="topic filter(s), e.g. 'edgebus/#'")
    s.add_argument("-t", "--topic", action="append", default=[], dest="topic_options",
                   metavar="TOPIC", help="a topic filter, as mosquitto_sub takes it (repeatable)")
    s.add_argument("-q", "--qos", type=int, choices=[0, 1, 2], default=1, help="QoS (default 1)")
    s.add_argument("-v", "--verbose", action="store_true", help="print the topic before the payload")
    s.add_argument("--json", action="store_true",
                   help="print each message as a JSON object with topic, qos, retain, kind, payload")
    s.add_argument("-C", "--count", type=int, default=0, help="exit after this many messages")
    s.add_argument("-W", "--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="exit with code 27 after this many seconds without finishing")
    s.add_argument("-R", "--no-retained", action="store_true", help="skip retained messages")
    _add_connection_args(s)

    p = sub.add_parser("pub", help="publish one message",
                       description="Publish one message; waits for the broker's acknowledgement "
                                   "at QoS 1 and 2.")
    p.add_argument("-t", "--topic", required=True, help="topic to publish to")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--message", help="payload text")
    src.add_argument("-f", "--file", type=Path, help="payload from a file")
    src.add_argument("-s", "--stdin", action="store_true", help="payload from standard input")
    p.add_argument("--envelope", action="store_true",
                   help="parse the payload as JSON and send it as an edgebus envelope")
    p.add_argument("-q", "--qos", type=int, choices=[0, 1, 2], default=1, help="QoS (default 1)")
    p.add_argument("-r", "--retain", action="store_true", help="retain the message")
    _add_connection_args(p)

    c = sub.add_parser(
        "cmd", help="send a command to a device and print its reply",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send command NAME to DEVICE (the command record is built for you) and print "
                    "the device's JSON reply.\nEach KEY=VALUE goes into the command's args; VALUE "
                    "is read as JSON when it parses\n(5, true, [1,2], {\"a\":1}) and as text "
                    "otherwise.",
        epilog="commands every agent knows: rebirth, config (metrics={...}), and with cameras\n"
               "assign (camera=NAME source=... and the [[cameras]] keys) and unassign (camera=NAME).\n"
               "exit: 0 ok, 1 the device refused (its reply says why), 27 no reply in --wait.")
    c.add_argument("device", metavar="DEVICE", help="the device id")
    c.add_argument("name", metavar="NAME", help="the command, e.g. rebirth, config, assign")
    c.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="an argument of the command")
    c.add_argument("--args", dest="args_json", metavar="JSON",
                   help="the args as one JSON object (KEY=VALUE pairs are added to it)")
    c.add_argument("--root", default=DEFAULT_ROOT, help=f"topic root (default {DEFAULT_ROOT})")
    c.add_argument("-W", "--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the reply (default 10; 0: send and do not wait)")
    _add_connection_args(c)

    # Dispatched by main() before argparse sees them; listed so that usage names them.
    sub.add_parser("lock", add_help=False, help="fenced locks over a Raft group (edge-bus lock --help)")
    sub.add_parser("raft", add_help=False, help="run and manage Raft nodes (edge-bus raft --help)")
    sub.add_parser("tx", add_help=False, help="two-phase commit transactions (edge-bus tx --help)")
    sub.add_parser("bft", add_help=False, help="Byzantine agreement (PBFT) groups (edge-bus bft --help)")
    return parser


def _bus_config(args: argparse.Namespace) -> BusConfig:
    username, password = args.username, args.password
    creds_path = args.credentials
    if creds_path is None and username is None and DEFAULT_CREDENTIALS.exists():
        creds_path = DEFAULT_CREDENTIALS
    if creds_path is not None and username is None:
        creds = load_credentials(creds_path)
        username, password = creds.username, creds.password
    return BusConfig(
        host=args.host, port=args.port, username=username, password=password,
        client_id=f"edge-bus-{uuid.uuid4().hex[:12]}", clean_start=True,
        protocol=args.protocol, connect_timeout=min(args.connect_timeout, 10.0),
        reconnect_max_delay=2.0,
    )


def _connect(bus: BusSession, timeout: float) -> bool:
    bus.start()
    if bus.wait_connected(timeout):
        return True
    print(f"edge-bus: could not connect to {bus.config.host}:{bus.config.port}: "
          f"{bus.stats().last_error or 'timed out'}", file=sys.stderr)
    return False


def _run_sub(args: argparse.Namespace) -> int:
    inbox: queue.Queue[ReceivedMessage] = queue.Queue()
    bus = BusSession(_bus_config(args))
    for topic in [*args.topics, *args.topic_options]:
        bus.subscribe(topic, inbox.put, qos=args.qos)
    if not _connect(bus, args.connect_timeout):
        bus.stop(flush_timeout=0)
        return EXIT_FAILURE
    out = sys.stdout.buffer
    shown = 0
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    try:
        while not args.count or shown < args.count:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                return EXIT_TIMEOUT
            try:
                msg = inbox.get(timeout=wait)
            except queue.Empty:
                continue
            if args.no_retained and msg.retain:
                continue
            view = view_payload(msg.payload)
            if args.json:
                line = json.dumps({"topic": msg.topic, "qos": msg.qos, "retain": msg.retain,
                                   "kind": view.kind, "payload": view.as_json()},
                                  separators=(",", ":"), default=str).encode()
            else:
                line = view.as_line()
                if args.verbose:
                    line = msg.topic.encode() + b" " + line
            out.write(line + b"\n")
            out.flush()
            if view.kind == "invalid":
                print(f"edge-bus: {msg.topic}: {view.error}", file=sys.stderr)
            shown += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        pass
    finally:
        bus.stop(flush_timeout=0)
    return 0


def _read_payload(args: argparse.Namespace) -> bytes:
    if args.message is not None:
        data: bytes = args.message.encode()
    elif args.file is not None:
        data = args.file.read_bytes()
    else:
        data = sys.stdin.buffer.read()
    if args.envelope:
        try:
            body = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--envelope needs a JSON payload: {exc}") from exc
        data = EnvelopeCodec().encode(body)
    return data


def _run_pub(args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    bus = BusSession(_bus_config(args))
    if not _connect(bus, args.connect_timeout):
        bus.stop(flush_timeout=0)
        return EXIT_FAILURE
    try:
        bus.publish(args.topic, payload, qos=args.qos, retain=args.retain,
                    content_type=ENVELOPE_CONTENT_TYPE if args.envelope else None)
        if not bus.flush(args.connect_timeout):
            print("edge-bus: the broker did not acknowledge the message", file=sys.stderr)
            return EXIT_FAILURE
        if bus.stats().rejected_by_broker:
            print(f"edge-bus: the broker rejected the message for {args.topic}", file=sys.stderr)
            return EXIT_FAILURE
    finally:
        bus.stop(flush_timeout=0)
    return 0


def _command_args(args: argparse.Namespace) -> dict[str, object]:
    """``--args`` and the KEY=VALUE pairs as one mapping (values read as JSON when they parse)."""
    result: dict[str, object] = {}
    if args.args_json is not None:
        try:
            loaded = json.loads(args.args_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--args is not JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError("--args must be a JSON object")
        result.update(loaded)
    for pair in args.pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{pair!r} is not KEY=VALUE")
        try:
            value: object = json.loads(text)
        except json.JSONDecodeError:
            value = text
        result[key] = value
    return result


def build_command(args: argparse.Namespace, command_id: str, time_ms: int) -> tuple[str, Command]:
    """The topic and the command record ``edge-bus cmd`` sends (a ConfigError names what is wrong)."""
    tree = TopicTree(args.root)
    try:
        topic = tree.cmd(args.device, args.name)
        command = Command(device=args.device, name=args.name, command_id=command_id,
                          time_ms=time_ms, args=_command_args(args))
    except (TopicError, CodecError) as exc:
        raise ConfigError(str(exc)) from exc
    return topic, command


def _run_cmd(args: argparse.Namespace) -> int:
    command_id = f"cli-{uuid.uuid4().hex[:12]}"
    topic, command = build_command(args, command_id, time.time_ns() // 1_000_000)
    # Without reply_to the agent answers on its retained state/last_command (a topic any
    # device may write under the generated ACL); every answer passes by while subscribed.
    reply_topic = TopicTree(args.root).state(args.device, LAST_COMMAND_STATE)
    replies: queue.Queue[ReceivedMessage] = queue.Queue()
    bus = BusSession(_bus_config(args))
    if args.wait > 0:
        bus.subscribe(reply_topic, replies.put, qos=1)
    if not _connect(bus, args.connect_timeout):
        bus.stop(flush_timeout=0)
        return EXIT_FAILURE
    try:
        if args.wait > 0 and not bus.wait_subscribed(args.connect_timeout):
            print("edge-bus: the broker did not confirm the reply subscription", file=sys.stderr)
            return EXIT_FAILURE
        bus.publish(topic, encode_record(command), qos=1, content_type=ENVELOPE_CONTENT_TYPE)
        if not bus.flush(args.connect_timeout) or bus.stats().rejected_by_broker:
            print(f"edge-bus: the broker did not accept the command on {topic}", file=sys.stderr)
            return EXIT_FAILURE
        if args.wait <= 0:
            return 0
        deadline = time.monotonic() + args.wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = replies.get(timeout=left)
            except queue.Empty:
                break
            try:
                reply = json.loads(message.payload)
            except ValueError:
                continue
            if not isinstance(reply, dict) or reply.get("id") != command_id:
                continue
            print(json.dumps(reply, separators=(",", ":")), flush=True)
            return 0 if reply.get("ok") is True else EXIT_FAILURE
        print(f"edge-bus: no reply from {args.device} within {args.wait:g} s (is it online? "
              f"edge-bus sub '{args.root}/{args.device}/status')", file=sys.stderr)
        return EXIT_TIMEOUT
    finally:
        bus.stop(flush_timeout=0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lock"]:
        from broker.coordination.cli import lock_main

        return lock_main(argv[1:])
    if argv[:1] == ["tx"]:
        from broker.twopc.cli import tx_main

        return tx_main(argv[1:])
    if argv[:1] == ["raft"]:
        from broker.coordination.cli import raft_main

        return raft_main(argv[1:])
    if argv[:1] == ["bft"]:
        from broker.bft.cli import bft_main

        return bft_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sub" and not (args.topics or args.topic_options):
        parser.error("sub needs at least one topic filter (TOPIC or -t TOPIC)")
    setup_logging(args.log_level)
    run = {"sub": _run_sub, "pub": _run_pub, "cmd": _run_cmd}[args.command]
    return run_tool("edge-bus", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
