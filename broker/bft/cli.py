"""``edge-bus bft serve|submit|status``: run a PBFT replica, submit a decision, show the group.

    edge-bus bft sign    --group fleet.json --keys keys/            # the fleet's edge-flash keys
    edge-bus bft serve   --group fleet.json --trust keys/ --id gw-1 --key keys/gw-1
    edge-bus bft submit  --group fleet.json --trust keys/ --id coord --key keys/coord quarantine/cam-7 yes
    edge-bus bft propose --group fleet.json --trust keys/ --id gw-1c --key keys/gw-1c quarantine cam-7
    edge-bus bft status  --group fleet.json --trust keys/ [--json]

Exit codes: 0 done, 1 refused or bad configuration, 2 no answer in time.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.bft.client import BftClient
from broker.bft.group import BftGroup, load_group, load_private_key, load_signer
from broker.bft.group_signature import sign_group
from broker.bft.hooks import load_hook, revocation_hook
from broker.bft.journal import VoteJournal
from broker.bft.replica_driver import BftReplicaDriver
from broker.bft.topics import BftTopics
from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from broker.session import BusConfig
from protocols.pbft import Durable, PbftConfig, Replica, ReplicatedStateMachine, Signer, Verifier
from protocols.pbft.sim.byzantine import EquivocatingPrimary
from protocols.sim.prng import SplitMix64
from schemas.errors import ConfigError, CoordinationTimeout

__all__ = ["bft_main"]


def _common(p: argparse.ArgumentParser, identity: bool = True) -> None:
    p.add_argument("--group", required=True, type=Path, help="the group file (see broker/bft/group.py)")
    p.add_argument("--trust", required=True, type=Path,
                   help="the fleet's trusted_keys.json (or keys directory) the group file's signature must "
                        "verify against")
    if identity:
        p.add_argument("--id", required=True, help="this replica's or client's identity in the group file")
        p.add_argument("--key", required=True, type=Path,
                       help="its `edge-flash keys` directory (or the signing.key file)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--root", default="edgebus")
    p.add_argument("--log-level", default="WARNING")


def _bus(args: argparse.Namespace, name: str) -> BusConfig:
    return BusConfig(host=args.host, port=args.port, username=args.username,
                     password=os.environ.get("EDGEBUS_BROKER_PASSWORD"), root=args.root,
                     client_id=name, clean_start=True, keepalive=5)


def _serve(args: argparse.Namespace, group: BftGroup) -> int:
    if args.id not in group.pbft.replicas:
        raise ConfigError(f"{args.id!r} is not a replica of group {group.name} ({group.pbft.replicas})")
    signer = load_signer(args.id, args.key)
    def equivocating(
        cfg: PbftConfig, sm: ReplicatedStateMachine, sig: Signer, ver: Verifier, durable: Durable | None,
    ) -> Replica:
        return EquivocatingPrimary(cfg, sm, sig, ver, SplitMix64(1), group.clients, durable)

    # --test-equivocate: a test-only fault; as primary, this replica sends conflicting pre-prepares
    replica_class: Callable[..., Replica] = equivocating if args.test_equivocate else Replica
    journal = None
    if args.data is not None:
        journal = VoteJournal(args.data / f"{group.name}-{args.id}.votes", fsync=args.fsync)
    driver = BftReplicaDriver(group, signer, _bus(args, f"bft-{args.id}"), replica_class=replica_class,
                              journal=journal)
    driver.on_quarantine += [load_hook(spec) for spec in args.on_quarantine]
    if args.revoke_site is not None or args.revoke_data_dir is not None:
        from broker.revocation import FileRevoker

        pid_file = args.broker_pid_file
        revoker = (FileRevoker(args.revoke_site, pid_file=pid_file) if args.revoke_site is not None
                   else FileRevoker.for_embedded(args.revoke_data_dir, pid_file=pid_file))
        driver.on_quarantine.append(revocation_hook(revoker, group.name))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: driver.stop())
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack on stderr
    driver.run()
    return 0


def _submit(args: argparse.Namespace, group: BftGroup) -> int:
    return _send(args, group, json.dumps({"key": args.decision_key, "value": args.value}).encode())


def _propose(args: argparse.Namespace, group: BftGroup) -> int:
    if group.state_machine != "fleet_log":
        raise ConfigError(f"group {group.name} runs {group.state_machine!r}; propose needs 'fleet_log'")
    doc: dict[str, object] = {"op": args.kind.replace("-", "_")}
    want = 2 if args.kind == "accept-model" else 1
    if len(args.args) != want:
        raise ConfigError(f"propose {args.kind} takes {'GROUP VERSION' if want == 2 else 'DEVICE'}")
    if args.kind == "accept-model":
        doc["group"], doc["version"] = args.args
    else:
        doc["device"] = args.args[0]
    return _send(args, group, json.dumps(doc).encode())


def _send(args: argparse.Namespace, group: BftGroup, op: bytes) -> int:
    client = BftClient(group, load_signer(args.id, args.key), _bus(args, f"bft-{args.id}"))
    try:
        client.start(args.timeout)
        print(client.submit(op, args.timeout).decode())
    except CoordinationTimeout as exc:
        print(f"edge-bus bft: {exc}", file=sys.stderr)
        return 2
    finally:
        client.stop()
    return 0


def _status(args: argparse.Namespace, group: BftGroup) -> int:
    topics = BftTopics(args.root, group.name)
    docs: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def on_status(msg: ReceivedMessage) -> None:
        with lock:
            doc = json.loads(msg.payload)
            docs[str(doc.get("replica"))] = doc

    t = PeerTransport(_bus(args, f"bft-status-{os.getpid()}"), f"bft-status-{os.getpid()}")
    for r in group.pbft.replicas:
        t.subscribe(topics.status(r), on_status)
    t.start()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and len(docs) < len(group.pbft.replicas):
        time.sleep(0.05)
    t.stop()
    if args.json:
        print(json.dumps(docs, indent=2, sort_keys=True))
    else:
        print(f"{'replica':<12} {'view':>5} {'primary':<12} {'stable':>7} {'executed':>9}  quarantined")
        for r in group.pbft.replicas:
            d = docs.get(r)
            if d is None:
                print(f"{r:<12} (no status: not running?)")
                continue
            q = ",".join(sorted(d.get("quarantined", {}))) or "-"
            print(f"{r:<12} {d['view']:>5} {d['primary']!s:<12} {d['stable_checkpoint']:>7} "
                  f"{d['last_executed']:>9}  {q}")
    return 0 if docs else 2


def bft_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-bus bft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("serve", help="run one replica until SIGTERM")
    _common(s)
    s.add_argument("--data", type=Path,
                   help="directory for the vote journal: without it a restarted replica may sign a second, "
                        "different vote for a slot and be quarantined as a liar")
    s.add_argument("--fsync", action="store_true", help="fsync every journal append (survives power loss)")
    s.add_argument("--test-equivocate", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--on-quarantine", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="call FUNCTION(replica_id, evidence) when a replica is proven a liar (repeatable)")
    revoke = s.add_mutually_exclusive_group()
    revoke.add_argument("--revoke-site", type=Path, metavar="DIR",
                        help="revoke a proven liar's broker login in this Mosquitto site (edge-broker "
                             "mosquitto-config --out DIR; replica ids are device ids)")
    revoke.add_argument("--revoke-data-dir", type=Path, metavar="DIR",
                        help="the same for the embedded broker of edge-broker run --devices --data-dir DIR")
    s.add_argument("--broker-pid-file", type=Path, metavar="FILE",
                   help="with --revoke-*: the broker's pid file, sent SIGHUP so the revocation takes effect "
                        "at once (without it only the files change)")
    m = sub.add_parser("submit", help="decide KEY=VALUE in the group's decision log (first value wins)")
    _common(m)
    m.add_argument("decision_key", metavar="KEY")
    m.add_argument("value", metavar="VALUE")
    m.add_argument("--timeout", type=float, default=10.0)
    pr = sub.add_parser("propose", help="vote for a fleet decision (fleet_log groups): quarantine DEVICE, "
                                        "release DEVICE, accept-model GROUP VERSION")
    _common(pr)
    pr.add_argument("kind", choices=("quarantine", "release", "accept-model"))
    pr.add_argument("args", nargs="+")
    pr.add_argument("--timeout", type=float, default=10.0)
    sg = sub.add_parser("sign", help="sign the group file (and its trusted_keys) with the fleet's key")
    sg.add_argument("--group", required=True, type=Path)
    sg.add_argument("--keys", required=True, type=Path, help="an `edge-flash keys` directory or signing.key")
    sg.add_argument("--log-level", default="WARNING")
    st = sub.add_parser("status", help="view, primary, stable checkpoint and quarantined replicas")
    _common(st, identity=False)
    st.add_argument("--timeout", type=float, default=3.0)
    st.add_argument("--json", action="store_true", help="machine-readable, with the evidence records")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.action == "sign":
            print(sign_group(args.group, load_private_key(args.keys)))
            return 0
        group = load_group(args.group, args.trust)
        actions = {"serve": _serve, "submit": _submit, "propose": _propose, "status": _status}
        return actions[args.action](args, group)
    except ConfigError as exc:
        print(f"edge-bus bft: {exc}", file=sys.stderr)
        return 1
