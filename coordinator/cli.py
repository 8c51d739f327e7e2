"""`edge-coordinator`: the fleet-side process.

``edge-coordinator start`` with no configuration starts the embedded broker
(credentials generated into the data directory) and watches the fleet's
streams; ``--demo`` adds simulated gateway agents so there is something to
watch. With ``--config`` it connects to the broker the file names instead.
Either way it serves the HTTP API and dashboard (``[http]``; 127.0.0.1:8780 by
default). ``edge-coordinator export`` writes a device's raw samples as CSV;
``edge-coordinator audit`` lists the stored security events (coordinator/audit.py).

Exit codes: 0 stopped cleanly; 1 runtime failure (broker could not start or be
reached); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.acl import BusAcl
from broker.audit import AuditLog
from broker.cli import lanes_line
from broker.cli_support import run_tool, setup_logging
from broker.credentials import Credentials, generate_password, load_or_create_credentials
from broker.embedded import EmbeddedBroker
from broker.guarantees import guarantees_block
from broker.mosquitto_config import DEVICE_CREDENTIALS_FILE, read_credentials_csv, write_credentials_csv
from broker.mosquitto_log import MosquittoLogAudit
from broker.session import BusConfig, BusSession
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.audit import AuditTrail
from coordinator.batch_job import BatchJobConfig
from coordinator.cluster import DeviceShards, read_cluster
from coordinator.config import DEFAULT_CLIENT_ID, CoordinatorConfig
from coordinator.coordination_view import CoordinationView
from coordinator.demo import SimulatedFleet
from coordinator.fleet_decisions import FleetDecisions
from coordinator.fleet_view import FleetView
from coordinator.http.config import DEFAULT_HTTP_PORT, HttpConfig
from coordinator.http.live_feed import LiveFeed
from coordinator.ingest import Ingest
from coordinator.placement.control import ACTIONS as PLACEMENT_ACTIONS
from coordinator.placement.control import apply_control, format_table, read_placement
from coordinator.placement.service import PlacementService
from coordinator.processor import FleetProcessor
from coordinator.sample_export import csv_chunks
from coordinator.services import Services
from coordinator.store.base import Store, open_store
from coordinator.time_text import parse_time_ms
from schemas.errors import BusError, ConfigError

__all__ = ["main"]

logger = logging.getLogger(__name__)

DEMO_ANOMALY: Mapping[str, Any] = {"detector": {"warmup": 30}}
#: The demo runs for minutes, not hours: look at the last ten minutes every half minute.
DEMO_BATCH: Mapping[str, Any] = {"interval_s": 30, "window_s": 600}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-coordinator",
        description="The edgebus coordinator: watches the fleet's streams.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  edge-coordinator start --demo        embedded broker + simulated agents, live view\n"
               "  edge-coordinator start               embedded broker on 127.0.0.1:1883, ready for agents\n"
               "  edge-coordinator start --config coordinator.toml   use the broker the file names\n"
               "  edge-coordinator placement show --config coordinator.toml   where cameras run, and why",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{start,export,placement,audit,cluster}")
    s = sub.add_parser("start", help="start the coordinator and show the fleet until Ctrl-C",
                       description="Start the coordinator. Without --config it runs the embedded "
                                   "broker (MQTT 3.1.1, credentials in DATA_DIR/broker) itself.")
    s.add_argument("--config", type=Path, help="coordinator.toml ([broker] table: host, port, "
                                                "username, password, ...)")
    s.add_argument("--demo", action="store_true",
                   help="also run simulated gateway agents publishing metrics")
    s.add_argument("--agents", type=int, default=4, help="simulated agents with --demo (default 4)")
    s.add_argument("--host", default="127.0.0.1", help="embedded broker address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=1883,
                   help="embedded broker port (default 1883; with --demo a free port is used "
                        "when 1883 is taken)")
    s.add_argument("--data-dir", type=Path, default=None, help="where state lives (default ./data)")
    s.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    s.add_argument("--http-host", default=None, metavar="ADDRESS",
                   help="where the API and dashboard listen (default [http] host, 127.0.0.1; 0.0.0.0 "
                        "exposes them to the network: reading needs no token)")
    s.add_argument("--http-port", type=int, default=None, metavar="PORT",
                   help=f"API and dashboard port (default [http] port, {DEFAULT_HTTP_PORT}; 0: any free "
                        "port; with --demo a free port is used when it is taken)")
    s.add_argument("--no-http", action="store_true", help="serve no HTTP API or dashboard")
    e = sub.add_parser("export", help="write a device's raw samples as CSV",
                       description="Write one device's raw samples (all metrics, or one) over a time range "
                                   "as CSV: time_ms,time,device,metric,value,epoch,seq. Times are epoch "
                                   "milliseconds or ISO 8601 (UTC unless an offset is given).")
    e.add_argument("--config", type=Path, help="coordinator.toml (its [store] and data_dir)")
    e.add_argument("--data-dir", type=Path, default=None, help="where state lives (default ./data)")
    e.add_argument("--device", required=True, help="the device id")
    e.add_argument("--metric", default=None, help="only this metric")
    e.add_argument("--since", default=None, help="from this moment (inclusive)")
    e.add_argument("--until", default=None, help="up to this moment (exclusive)")
    e.add_argument("-o", "--output", type=Path, default=None, help="write here (default: stdout)")
    p = sub.add_parser("placement", help="see and steer where cameras run (load balancing)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="See the placement table, or change the operator's controls (kept "
                                   "retained on the bus; the placer applies them in its next round).\n\n"
                                   + "\n".join(f"  {(a + ' ' + args):<36} {what}" for a, (args, what)
                                                in PLACEMENT_ACTIONS.items()))
    p.add_argument("action", choices=list(PLACEMENT_ACTIONS), metavar="ACTION",
                   help=", ".join(PLACEMENT_ACTIONS))
    p.add_argument("args", nargs="*", help="CAMERA and/or AGENT, as the action needs")
    p.add_argument("--config", type=Path, required=True,
                   help="coordinator.toml (its [broker] and [placement] group)")
    p.add_argument("--json", action="store_true", help="show: print the raw table as JSON")
    a = sub.add_parser("audit", help="list the stored security events, newest first",
                       description="List the audit log (refused logins, ACL denials, revocations, dead "
                                   "letters, quarantines, OTA outcomes) from the store, newest first.")
    a.add_argument("--config", type=Path, help="coordinator.toml (its [store] and data_dir)")
    a.add_argument("--data-dir", type=Path, default=None, help="where state lives (default ./data)")
    a.add_argument("--kind", default=None, help="only this kind (auth_failure, revocation, ...)")
    a.add_argument("--subject", default=None, help="only this device or user")
    a.add_argument("-n", "--limit", type=int, default=50, help="at most this many (default 50)")
    a.add_argument("--json", action="store_true", help="one JSON record per line (as on the bus)")
    c = sub.add_parser("cluster", help="see which coordinator owns which devices ([cluster])",
                       description="Show the members of the [cluster] group (online or not) and the devices "
                                   "each last said it takes, from their retained messages on the bus.")
    c.add_argument("action", choices=["show"], metavar="ACTION", help="show")
    c.add_argument("--config", type=Path, required=True, help="coordinator.toml (its [broker] and [cluster])")
    c.add_argument("--json", action="store_true", help="print member -> {online, devices, members, time_ms}")
    return parser


def _placement(args: argparse.Namespace) -> int:
    config = CoordinatorConfig.load(args.config)
    if config.placement is None or config.broker is None:
        raise ConfigError(f"{args.config} has no [placement] table (or no [broker]): nothing places there")
    bus = replace(config.broker, client_id=None, device=None, clean_start=True)
    group = config.placement.group
    if args.action == "show":
        if args.args:
            raise ConfigError("placement show takes no arguments")
        table, controls = read_placement(bus, group)
        print(json.dumps({"table": table, "controls": controls.to_json()}, indent=1, sort_keys=True)
              if args.json else format_table(table, controls))
        return 0
    controls = apply_control(bus, group, args.action, args.args)
    print(f"placement {args.action} {' '.join(args.args)}: published; the placer applies it next round")
    print(format_table(None, controls).splitlines()[0])
    return 0


def _cluster(args: argparse.Namespace) -> int:
    config = CoordinatorConfig.load(args.config)
    if config.cluster is None or config.broker is None:
        raise ConfigError(f"{args.config} has no [cluster] table (or no [broker])")
    members = read_cluster(config.broker, config.cluster.group)
    if args.json:
        print(json.dumps(members, indent=1, sort_keys=True))
        return 0
    if not members:
        print(f"cluster {config.cluster.group}: no member has announced itself")
    for name, entry in sorted(members.items()):
        devices = entry.get("devices") or []
        state = "online" if entry.get("online") else "offline"
        print(f"{name:<24} {state:<8} {len(devices):>5} devices  {' '.join(devices)}")
    return 0


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _run_view(view: FleetView, stop: threading.Event, duration: float) -> None:
    live = sys.stdout.isatty()
    interval = 1.0 if live else 5.0
    waited = 0.0
    while not stop.wait(interval):
        waited += interval
        if live:
            sys.stdout.write("\x1b[H\x1b[2J" + view.table() + "\n\nCtrl-C stops.\n")
            sys.stdout.flush()
        else:
            print(view.summary(), flush=True)
        if duration and waited >= duration:
            break


def _open_store(config: CoordinatorConfig, data_dir: Path) -> Store:
    try:
        return open_store(config.store, data_dir=data_dir)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"the coordinator's store needs its extra ({exc}): "
                          "pip install 'edgebus[coordinator]'") from exc


def _http_config(config: CoordinatorConfig, args: argparse.Namespace) -> HttpConfig:
    http = config.http
    if args.no_http:
        return replace(http, enabled=False)
    if args.http_host is not None:
        http = replace(http, host=args.http_host)
    if args.http_port is not None:
        if not 0 <= args.http_port <= 65535:
            raise ConfigError(f"--http-port must be 0..65535, not {args.http_port}")
        http = replace(http, port=args.http_port)
    if args.demo and http.port and not _port_free(http.host, http.port):
        http = replace(http, port=0)
    return http


def _start_http(http: HttpConfig, feed: LiveFeed, store: Store, bus: BusSession, ingest: Ingest,
                processor: FleetProcessor, view: FleetView, coordination: CoordinationView,
                shards: DeviceShards | None = None) -> Any:
    """The API and dashboard server, started (imported here: without them no web stack is needed)."""
    try:
        from coordinator.http.app import build_app
        from coordinator.http.context import ApiContext
        from coordinator.http.server import HttpServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"the HTTP API needs the coordinator extra ({exc}): pip install "
                          "'edgebus[coordinator]', or set [http] enabled = false") from exc
    context = ApiContext(store=store, config=http, feed=feed, session=bus, ingest=ingest, processor=processor,
                         view=view, coordination=coordination, cluster=shards)
    server = HttpServer(build_app(context), http).start()
    print(f"dashboard: {server.url}  (API {server.url}api/v1, Prometheus {server.url}metrics)", flush=True)
    if not http.loopback:
        print(f"  the API listens on {http.host}: anyone who reaches it can read the fleet"
              + ("" if http.token else "; changes are off until [http] token is set"), flush=True)
    return server


def demo_credentials(broker_dir: Path, devices: list[str]) -> dict[str, Credentials]:
    """A password per demo device, kept in ``device-credentials.csv`` (the mosquitto-config format)."""
    path = broker_dir / DEVICE_CREDENTIALS_FILE
    known = read_credentials_csv(path) if path.exists() else {}
    creds = {d: Credentials(d, known.get(d) or generate_password()) for d in devices}
    if any(known.get(d) != c.password for d, c in creds.items()):
        broker_dir.mkdir(parents=True, exist_ok=True)
        write_credentials_csv(path, [*creds.values()])
    return creds


def _start(args: argparse.Namespace) -> int:
    config = CoordinatorConfig.load(args.config) if args.config else CoordinatorConfig()
    http = _http_config(config, args)
    data_dir = args.data_dir or config.data_dir
    embedded: EmbeddedBroker | None = None
    demo_devices: dict[str, Credentials] = {}
    # A stable id and a persistent session: the broker keeps what arrives while we restart.
    client_id = DEFAULT_CLIENT_ID
    if config.embedded_broker:
        port = args.port
        if not _port_free(args.host, port):
            if not args.demo:
                raise BusError(f"port {port} on {args.host} is already in use; pass --port "
                               "or point --config at the broker that is running there")
            port = 0
        creds: Credentials = load_or_create_credentials(data_dir / "broker")
        broker_audit = AuditLog("broker")  # stored and published once the store and the bus are up
        if args.demo:  # every simulated agent logs in as itself, in its own lanes
            demo_devices = demo_credentials(data_dir / "broker", SimulatedFleet.device_ids(args.agents))
            acl = BusAcl(devices=tuple(demo_devices), coordinators=(creds.username,))
            embedded = EmbeddedBroker(host=args.host, port=port, data_dir=data_dir / "broker",
                                      credentials=[creds, *demo_devices.values()], bus_acl=acl,
                                      audit=broker_audit)
        else:
            embedded = EmbeddedBroker(host=args.host, port=port, data_dir=data_dir / "broker",
                                      credentials=[creds], audit=broker_audit)
        embedded.start()
        bus_config = BusConfig(host=args.host, port=embedded.port, username=creds.username,
                               password=creds.password, client_id=client_id, clean_start=False,
                               protocol="3.1.1")  # amqtt speaks 3.1.1 only; skip the probe
        print(f"embedded broker listening on {args.host}:{embedded.port} (MQTT 3.1.1)")
        print(f"  watch it: mosquitto_sub -h {args.host} -p {embedded.port} -u {creds.username} "
              f"-P '{creds.password}' -t 'edgebus/#' -v")
        print(f"  decoded:  edge-bus sub -p {embedded.port} --credentials "
              f"{data_dir / 'broker' / 'credentials.json'} 'edgebus/#'")
        print(f"  {lanes_line(False, bool(demo_devices), data_dir / 'broker')}")
        print(guarantees_block("embedded"))
    else:
        if config.broker is None:
            raise ConfigError("embedded_broker = false needs a [broker] table")
        bus_config = replace(config.broker, client_id=config.broker.client_id or client_id,
                             device=None)
        if config.cluster is not None:
            # Each member its own session; a clean one, so no per-device subscription of an earlier run
            # (devices it may no longer own) outlives it on the broker.
            member = config.cluster.member or bus_config.resolved_client_id()
            if bus_config.client_id == DEFAULT_CLIENT_ID:
                bus_config = replace(bus_config, client_id=f"{DEFAULT_CLIENT_ID}-{member}")
            bus_config = replace(bus_config, clean_start=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = _open_store(config, data_dir)
    placer: PlacementService | None = None
    if config.placement is not None:  # needs none of the stream processing: first, as that can take a while
        placer = PlacementService(bus_config, config.placement, bus_config.resolved_client_id(),
                                  decision_sink=store.record_placement_decision)
        placer.start()
    # The demo's agents start from nothing; learn for half a minute instead of two.
    online = {k: v for k, v in config.anomaly.items() if k != "batch"}  # [anomaly.batch] is the services'
    engine = AnomalyEngine(online or (DEMO_ANOMALY if args.demo else {}))
    bus = BusSession(bus_config)
    ingest = Ingest(bus, shared_group=config.shared_group, limits=config.ingest,
                    sharded=config.cluster is not None)
    decisions: FleetDecisions | None = None
    if config.decisions is not None:  # quarantines take effect here only once the BFT group decided them
        decisions = FleetDecisions(config.decisions, bus_config)
        decisions.refuse_in(ingest)
    processor = FleetProcessor(bus, ingest, store, engine, data_dir=data_dir, stored_acks=config.stored_acks)
    audit = AuditTrail(bus, store, source=bus_config.resolved_client_id())
    if embedded is not None and embedded.audit is not None:
        audit.attach(embedded.audit)
    stop_log = threading.Event()
    if config.mosquitto_log is not None:
        mosquitto_log = MosquittoLogAudit(config.mosquitto_log, AuditLog("mosquitto"))
        audit.attach(mosquitto_log.audit)
        mosquitto_log.follow(stop_log)
    view = FleetView(ingest.sequence_snapshot, forecast=processor.forecast)
    processor.alert_listeners.append(lambda a: view.on_anomaly(a.device, f"{a.metric}: {a.explanation}"))
    feed = LiveFeed(http.live_queue)
    processor.alert_listeners.append(feed.on_alert)
    coordination = CoordinationView(bus.topics.root).attach(bus)
    services_config = config.services
    if args.demo and not config.batch_configured:
        services_config = replace(services_config, batch=BatchJobConfig.from_mapping(DEMO_BATCH))
    services = Services(bus, processor, store, services_config)
    processor.restore()
    shards: DeviceShards | None = None
    if config.cluster is not None:
        member = config.cluster.member or bus_config.resolved_client_id()
        processor.cluster_member = member
        shards = DeviceShards(bus_config, config.cluster, member, take=processor.take_devices,
                              release=processor.release_devices)
        print(f"cluster {config.cluster.group}: member {member}; devices are taken as the members agree")
        if not config.store.get("url"):
            logger.warning("[cluster] with the default SQLite store in %s: each member stores its devices in "
                           "its own file; give every member the same [store] url (PostgreSQL)", data_dir)
    # The live feed first: live points need not wait for scoring or the store's hand-over.
    ingest.sinks += [services.known, feed, processor, view, audit]
    ingest.start()
    print(f"history in the {config.store.get('type', 'sql')} store "
          f"({'SQLite in ' + str(data_dir) if not config.store.get('url') else 'store.url'}); "
          f"anomalies on {bus.topics.root}/_anomaly/+/+")
    fleet = SimulatedFleet(bus_config, count=args.agents, credentials=demo_devices) if args.demo else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = None
    try:
        if http.enabled:
            server = _start_http(http, feed, store, bus, ingest, processor, view, coordination, shards)
        bus.start()
        if not bus.wait_connected(bus_config.connect_timeout + 5):
            raise BusError(f"cannot reach the broker at {bus_config.host}:{bus_config.port}: "
                           f"{bus.stats().last_error}")
        services.start()
        if decisions is not None:
            decisions.start()
            print(f"following the fleet decision log of BFT group {decisions.group.name}")
        if shards is not None:
            shards.start()
        if fleet is not None:
            fleet.start()
            print(f"{len(fleet.agents)} simulated agents publishing metrics every second")
        _run_view(view, stop, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
        if placer is not None:
            placer.stop()
        if decisions is not None:
            decisions.stop()
        if shards is not None:
            shards.stop()
        services.stop()
        stop_log.set()
        if fleet is not None:
            fleet.stop()
        bus.stop(flush_timeout=1)
        ingest.stop()  # what was already received is stored before we go
        processor.checkpoint()
        store.close()
        if embedded is not None:
            embedded.stop()
    if services.summary():
        print(services.summary())
    print(view.summary())  # the last line: scripts and tests read it
    return 0


def _time_arg(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from exc


def _export(args: argparse.Namespace) -> int:
    config = CoordinatorConfig.load(args.config) if args.config else CoordinatorConfig()
    since, until = _time_arg("since", args.since), _time_arg("until", args.until)
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    store = _open_store(config, args.data_dir or config.data_dir)
    try:
        if not any(d.id == args.device for d in store.devices()):
            raise ConfigError(f"the store has no device {args.device!r}")
        out = args.output.open("w", newline="") if args.output else sys.stdout
        try:
            for chunk in csv_chunks(store, args.device, since, until, args.metric):
                out.write(chunk)
        finally:
            if args.output:
                out.close()
    finally:
        store.close()
    return 0


def _audit(args: argparse.Namespace) -> int:
    config = CoordinatorConfig.load(args.config) if args.config else CoordinatorConfig()
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    store = _open_store(config, args.data_dir or config.data_dir)
    try:
        records = store.audit_events(args.limit, kind=args.kind, subject=args.subject)
    finally:
        store.close()
    for rec in records:
        if args.json:
            print(rec.encode().decode())
        else:
            when = datetime.fromtimestamp(rec.time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            subject = rec.subject or "-"
            print(f"{when}  {rec.kind:<13} {subject:<20} {rec.reason:<20} {rec.source}  {rec.detail}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.command == "export":
        return run_tool("edge-coordinator", lambda: _export(args))
    if args.command == "placement":
        return run_tool("edge-coordinator", lambda: _placement(args))
    if args.command == "audit":
        return run_tool("edge-coordinator", lambda: _audit(args))
    if args.command == "cluster":
        return run_tool("edge-coordinator", lambda: _cluster(args))
    return run_tool("edge-coordinator", lambda: _start(args))


if __name__ == "__main__":
    raise SystemExit(main())
