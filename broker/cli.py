"""``edge-broker``: run the embedded broker (or the system's Mosquitto), or write a Mosquitto site config.

    edge-broker run [--host 127.0.0.1] [--port 1883] [--data-dir ./data/broker] [--mosquitto]
    edge-broker mosquitto-config --devices devices.csv --out DIR [--port 1883] [--root edgebus]
    edge-broker tls init-ca | server-cert --host NAME | device-cert DEVICE [--dir tls]
    edge-broker revoke DEVICE (--site DIR | --data-dir DIR) [--pid PID | --pid-file FILE] [--reason TEXT]

``run`` prints which guarantees hold on the broker it started and which need
Mosquitto (:mod:`broker.guarantees`); ``run --mosquitto`` is the switch: the
same data directory and credentials, served by the system's ``mosquitto``
(:mod:`broker.local_mosquitto`). ``revoke`` takes a device's login away
while the broker runs (:mod:`broker.revocation`): the files lose the device
and the broker reloads them on SIGHUP (Mosquitto, or ``edge-broker run``).

Exit codes: 0 done, 1 the broker failed (port taken, could not start),
2 bad usage or configuration (the message names the option or file line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from broker.acl import BusAcl
from broker.cli_support import EXIT_OK, EXIT_USAGE, run_tool
from broker.credentials import (
    CREDENTIALS_FILE,
    Credentials,
    generate_password,
    load_credentials,
    load_or_create_credentials,
    write_credentials,
)
from broker.guarantees import NEEDS_MOSQUITTO, BrokerKind, guarantees_block
from broker.mosquitto_config import (
    DEVICE_CREDENTIALS_FILE,
    DeviceRoster,
    MosquittoSite,
    SiteFiles,
    TlsFiles,
    read_devices_csv,
    write_credentials_csv,
)
from broker.tls.cli import add_tls_parser, run_tls
from schemas.errors import BrokerError, ConfigError

__all__ = ["main"]

#: The user Mosquitto 2.x drops to when started as root (its ``user`` option's default).
BROKER_USER = "mosquitto"

logger = logging.getLogger(__name__)



def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-broker",
        description="Run edgebus's embedded MQTT broker, or generate a Mosquitto configuration "
                    "for a site.",
        epilog="Exit codes: 0 ok, 1 the broker failed, 2 bad usage or configuration.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: edgebus, -vv: also amqtt)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the embedded broker (or, with --mosquitto, Mosquitto) until Ctrl-C or SIGTERM",
        description="Run the embedded MQTT 3.1.1 broker (amqtt with edgebus's fixes; sessions, "
                    "queued and retained messages kept in DATA_DIR/broker.sqlite3) until Ctrl-C "
                    "or SIGTERM. Clients log in with the user in DATA_DIR/credentials.json, "
                    "created with a random password on first run. --mosquitto runs the system's "
                    "Mosquitto instead, with the same user, for MQTT 5, $share and speed.")
    run.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    run.add_argument("-p", "--port", type=_port, default=1883,
                     help="port to listen on (default 1883; 0 picks a free one)")
    run.add_argument("--data-dir", type=Path, default=Path("data/broker"),
                     help="where the credentials and password file live (default ./data/broker)")
    run.add_argument("--mosquitto", action="store_true",
                     help="run the system's mosquitto (apt-get install mosquitto) with a "
                          "configuration written into DATA_DIR/mosquitto, instead of the "
                          "embedded broker")
    run.add_argument("--json", action="store_true",
                     help="print one JSON line with the address and credentials path once ready")
    run.add_argument("--devices", type=Path, default=None, metavar="CSV",
                     help="one user per device (device_id[,password] per line, as for "
                          "mosquitto-config): the embedded broker then enforces the same per-device "
                          "lanes as the generated Mosquitto ACL; passwords are filled in and kept in "
                          "DATA_DIR/device-credentials.csv. Without it the one user may do everything")

    conf = sub.add_parser(
        "mosquitto-config", help="write mosquitto.conf, passwd and acl for a site",
        description="Write a Mosquitto 2.x configuration for a fleet: one user per device "
                    "(user name = device id) that may write only under its own topics, "
                    "coordinator users that may do everything under the root, persistence and "
                    "raised queue limits. Devices without a password in the CSV get one "
                    "(reused from an earlier run's device-credentials.csv when there is one).")
    conf.add_argument("--devices", type=Path, required=True, metavar="CSV",
                      help="one device per line: device_id[,password]")
    conf.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help="directory to write into (created if missing)")
    conf.add_argument("--host", default="0.0.0.0",
                      help="listener address (default 0.0.0.0: every interface)")
    conf.add_argument("-p", "--port", type=_port, default=None,
                      help="listener port (default 1883, or 8883 with --tls-cert)")
    conf.add_argument("--root", default="edgebus", help="topic root (default edgebus)")
    conf.add_argument("--data-dir", type=Path, default=None,
                      help="Mosquitto's persistence directory (default DIR/data)")
    conf.add_argument("--coordinator", action="append", default=None, metavar="USER",
                      help="a coordinator user; repeat for more (default: coordinator)")
    conf.add_argument("--tls-cert", type=Path, help="server certificate (PEM): listen with TLS")
    conf.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    conf.add_argument("--tls-ca", type=Path, help="CA certificate(s) (PEM)")
    conf.add_argument("--client-certs", action="store_true",
                      help="TLS listener requires a client certificate from --tls-ca (the "
                           "project CA of `edge-broker tls`); its CN is the ACL's user name")
    conf.add_argument("--loopback-port", type=_port, default=None, metavar="PORT",
                      help="with TLS, also a plain password listener on 127.0.0.1:PORT "
                           "(for a coordinator on the broker's machine)")
    conf.add_argument("--max-queued-messages", type=int, default=100_000, metavar="N",
                      help="per-client queue length (default 100000; Mosquitto's 1000 drops "
                           "messages for a slow subscriber)")
    conf.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_tls_parser(sub)

    revoke = sub.add_parser(
        "revoke", help="take a device's login away now, without restarting the broker",
        description="Revoke DEVICE's broker login: it is listed in revoked-devices.json (so regenerating "
                    "the configuration or restarting never lets it back), its password line and ACL block "
                    "are removed, and the running broker gets SIGHUP: Mosquitto 2.x reloads its files and "
                    "disconnects the device; edge-broker run rereads the revocations and drops its "
                    "connection. Without --pid/--pid-file only the files change.")
    revoke.add_argument("device", metavar="DEVICE", help="the device id (its user name)")
    where = revoke.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", type=Path, metavar="DIR",
                       help="a Mosquitto site written by edge-broker mosquitto-config --out DIR")
    where.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="the data directory of edge-broker run --devices")
    pid = revoke.add_mutually_exclusive_group()
    pid.add_argument("--pid", type=int, help="the running broker's process id (sent SIGHUP)")
    pid.add_argument("--pid-file", type=Path, metavar="FILE", help="a file holding the broker's pid")
    revoke.add_argument("--reason", default="revoked by operator",
                        help="why (kept in revoked-devices.json; 64 chars)")
    revoke.add_argument("--json", action="store_true", help="print the revocation as JSON")
    return parser


def _setup_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="edge-broker: %(levelname)s %(message)s")
    if verbose >= 1:
        for name in ("broker", "schemas"):
            logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    if verbose >= 2:
        logging.getLogger("amqtt").setLevel(logging.INFO)


def lanes_line(mosquitto: bool, per_device: bool, data_dir: Path) -> str:
    """What the running broker enforces between devices (printed at start: never quietly open)."""
    if per_device:
        return (f"per-device lanes: each device logs in as itself ({data_dir / DEVICE_CREDENTIALS_FILE}) "
                "and may write only its own topics (broker/acl.py)")
    kind = "Mosquitto" if mosquitto else "the embedded broker"
    return (f"OPEN BUS: {kind} has one user that may do everything - any client with its password can "
            "publish as any device and drive the coordination service; give devices their own users "
            "(edge-broker run --devices CSV, or edge-broker mosquitto-config)")


def _watch_line(host: str, port: int, creds: Credentials, root: str) -> str:
    return (f"mosquitto_sub -h {host} -p {port} -u {shlex.quote(creds.username)} "
            f"-P '{creds.password}' -t '{root}/#' -v")


def _run(args: argparse.Namespace) -> int:
    from broker.embedded import EmbeddedBroker
    from broker.local_mosquitto import LocalMosquitto

    data_dir: Path = args.data_dir
    creds = load_or_create_credentials(data_dir)
    broker: EmbeddedBroker | LocalMosquitto
    if args.mosquitto and args.devices is not None:
        raise ConfigError("--devices is for the embedded broker; for Mosquitto write a site "
                          "configuration with per-device users: edge-broker mosquitto-config --devices CSV")
    if args.mosquitto:
        broker = LocalMosquitto(args.host, args.port, data_dir, creds)
    elif args.devices is not None:
        roster = _without_revoked(read_devices_csv(args.devices, previous=data_dir / DEVICE_CREDENTIALS_FILE),
                                  data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        write_credentials_csv(data_dir / DEVICE_CREDENTIALS_FILE, roster.devices)
        acl = BusAcl(devices=tuple(d.username for d in roster.devices), coordinators=(creds.username,))
        broker = EmbeddedBroker(host=args.host, port=args.port, data_dir=data_dir,
                                credentials=[creds, *roster.devices], bus_acl=acl)
    else:
        broker = EmbeddedBroker(host=args.host, port=args.port, data_dir=data_dir,
                                credentials=[creds])
    kind: BrokerKind = "mosquitto" if args.mosquitto else "embedded"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    reload = threading.Event()
    previous_hup = signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
    try:
        broker.start()
        host = broker.connect_host
        creds_path = data_dir / CREDENTIALS_FILE
        protocol = "3.1.1, 5" if args.mosquitto else "3.1.1"
        if args.json:
            print(json.dumps({"host": host, "port": broker.port,
                              "url": f"mqtt://{host}:{broker.port}", "broker": kind,
                              "protocol": protocol, "username": creds.username,
                              "credentials": str(creds_path),
                              "per_device_lanes": args.devices is not None,
                              "needs_mosquitto": [] if args.mosquitto else list(NEEDS_MOSQUITTO)}),
                  flush=True)
        else:
            name = "Mosquitto" if args.mosquitto else "embedded"
            print(f"edge-broker: {name} MQTT {protocol} broker listening on "
                  f"{args.host or '*'}:{broker.port}")
            print(f"  credentials: {creds_path} (user {creds.username})")
            print(f"  {lanes_line(args.mosquitto, args.devices is not None, data_dir)}")
            print(f"  watch it:    {_watch_line(host, broker.port, creds, 'edgebus')}")
            print(guarantees_block(kind))
            print("Ctrl-C stops.", flush=True)
        while not stop.wait(0.5):
            if reload.is_set() and isinstance(broker, EmbeddedBroker):
                reload.clear()
                revoked = broker.apply_revocations()
                if revoked:
                    print(f"edge-broker: revoked {', '.join(sorted(revoked))}", flush=True)
            if isinstance(broker, LocalMosquitto) and broker.exit_code() is not None:
                raise BrokerError(f"mosquitto exited with code {broker.exit_code()}; its log "
                                  f"({broker.log_path}):\n{broker.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    return EXIT_OK


def _without_revoked(roster: DeviceRoster, directory: Path) -> DeviceRoster:
    """The roster minus the devices ``edge-broker revoke`` listed in ``directory`` (said on stderr)."""
    from broker.revocation import REVOKED_FILE, RevokedDevices

    revoked = RevokedDevices(directory / REVOKED_FILE).devices()
    kept = tuple(d for d in roster.devices if d.username not in revoked)
    for device in sorted(revoked & {d.username for d in roster.devices}):
        print(f"edge-broker: {device} is revoked ({directory / REVOKED_FILE}); left out", file=sys.stderr)
    if not kept:
        raise ConfigError("every device in the devices file is revoked")
    return replace(roster, devices=kept)


def _coordinator_credentials(out: Path, name: str) -> tuple[Credentials, Path, bool]:
    """The coordinator's credentials from ``out/<name>.credentials.json``, made if absent."""
    path = out / f"{name}.credentials.json"
    if path.exists():
        creds = load_credentials(path)
        if creds.username != name:
            raise ConfigError(f"{path} is for user {creds.username!r}, not {name!r}")
        return creds, path, False
    creds = Credentials(name, generate_password())
    write_credentials(path, creds)
    return creds, path, True


def _mosquitto_config(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_ca is not None and args.tls_cert is None:
        raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
    if args.client_certs and args.tls_ca is None:
        raise ConfigError("--client-certs needs --tls-ca (the project CA, ca.pem)")
    tls = (TlsFiles(certfile=args.tls_cert.resolve(), keyfile=args.tls_key.resolve(),
                    cafile=args.tls_ca.resolve() if args.tls_ca else None,
                    require_certificate=args.client_certs)
           if args.tls_cert is not None else None)
    port = args.port if args.port is not None else (8883 if tls else 1883)
    device_creds_path = out / DEVICE_CREDENTIALS_FILE
    roster = _without_revoked(read_devices_csv(args.devices, previous=device_creds_path), out)
    names = args.coordinator or ["coordinator"]
    # Validate everything before writing anything.
    MosquittoSite(listener_host=args.host, port=port,
                  data_dir=args.data_dir or out / "data", devices=roster.devices,
                  coordinators=[Credentials(n, "x") for n in names], root=args.root, tls=tls,
                  max_queued_messages=args.max_queued_messages, loopback_port=args.loopback_port)
    out.mkdir(parents=True, exist_ok=True)
    coordinators = [_coordinator_credentials(out, name) for name in names]
    site = MosquittoSite(listener_host=args.host, port=port,
                         data_dir=(args.data_dir or out / "data").resolve(),
                         devices=roster.devices, coordinators=[c for c, _, _ in coordinators],
                         root=args.root, tls=tls, max_queued_messages=args.max_queued_messages,
                         loopback_port=args.loopback_port)
    files = site.write(out)
    write_credentials_csv(device_creds_path, roster.devices)

    host = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host
    given_to = _give_to_broker_user(files)
    start = f"mosquitto -c {shlex.quote(str(files.conf))}"
    chown = ("chown " + shlex.quote(BROKER_USER) + ": "
             + " ".join(shlex.quote(str(p)) for p in (files.passwd, files.acl, files.data_dir)))
    if args.loopback_port is not None:
        watch = _watch_line("127.0.0.1", args.loopback_port, coordinators[0][0], args.root)
    else:
        watch = _watch_line(host, port, coordinators[0][0], args.root)
        if tls is not None:
            watch += f" --cafile {shlex.quote(str(tls.cafile or tls.certfile))}"
        if tls is not None and tls.require_certificate:
            watch += " --cert <coordinator>.pem --key <coordinator>.key"
    if args.json:
        print(json.dumps({
            "conf": str(files.conf), "passwd": str(files.passwd), "acl": str(files.acl),
            "data_dir": str(files.data_dir), "device_credentials": str(device_creds_path),
            "devices": len(roster.devices), "generated_passwords": list(roster.generated),
            "reused_passwords": list(roster.reused),
            "coordinators": {c.username: str(p) for c, p, _ in coordinators},
            "port": port, "start": start, "owner": given_to,
            "as_root_first": None if given_to else chown,
        }))
        return EXIT_OK
    given = len(roster.devices) - len(roster.generated) - len(roster.reused)
    print(f"wrote {files.conf}, {files.passwd.name} and {files.acl.name} "
          f"({len(roster.devices)} devices, {len(coordinators)} coordinator"
          f"{'s' if len(coordinators) != 1 else ''})")
    print(f"  device credentials for the flasher: {device_creds_path}")
    print(f"    {given} from {args.devices}, {len(roster.reused)} kept from the last run, "
          f"{len(roster.generated)} new")
    for creds, path, created in coordinators:
        print(f"  coordinator {creds.username}: {path}{' (new)' if created else ''}")
    print(f"start it:  {start}")
    if given_to:
        print(f"  passwd, acl and {files.data_dir.name}/ belong to user {given_to}: Mosquitto started as "
              "root drops to it before it reads them")
    else:
        print(f"  started as root, Mosquitto drops to user {BROKER_USER} before it reads passwd and acl; "
              f"first: {chown}")
    print(f"watch it:  {watch}")
    return EXIT_OK


def _give_to_broker_user(files: SiteFiles) -> str | None:
    """As root, hand passwd, acl and the data directory to the ``mosquitto`` user; its name, or None.

    Mosquitto 2.x started as root drops to the ``mosquitto`` user (its default ``user``)
    before it opens the password and ACL files and its persistence directory, so files
    only root can read make the printed ``mosquitto -c`` fail ("Unable to open pwfile").
    Run as another user, the files stay that user's (Mosquitto then runs as it and
    drops nothing), and the printed line says what to do before starting it as root.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return None
    try:
        for path in (files.passwd, files.acl, files.data_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    except OSError as exc:
        raise ConfigError(f"cannot give {path} to user {BROKER_USER}: {exc.strerror or exc}") from exc
    return BROKER_USER


def _revoke(args: argparse.Namespace) -> int:
    from broker.revocation import FileRevoker

    if args.site is not None:
        revoker = FileRevoker(args.site, pid=args.pid, pid_file=args.pid_file)
    else:
        revoker = FileRevoker.for_embedded(args.data_dir, pid=args.pid, pid_file=args.pid_file)
    entry = revoker.revoke_device(args.device, args.reason[:64])
    reloaded = args.pid is not None or args.pid_file is not None
    if args.json:
        print(json.dumps({"device": entry.device, "reason": entry.reason, "time_ms": entry.time_ms,
                          "revoked_file": str(revoker.revoked.path), "reload_sent": reloaded}))
        return EXIT_OK
    print(f"revoked {entry.device} ({entry.reason}); listed in {revoker.revoked.path}")
    if not reloaded:
        print("  no --pid given: send the broker SIGHUP to apply it now (kill -HUP <pid>)")
    return EXIT_OK


_COMMANDS = {"run": _run, "mosquitto-config": _mosquitto_config, "tls": run_tls, "revoke": _revoke}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-broker``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(args.verbose)
    return run_tool("edge-broker", lambda: _COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
