"""`edge-coordinator`: the fleet-side process.

``edge-coordinator start`` with no configuration starts the embedded broker
(credentials generated into the data directory) and watches the fleet's
streams; ``--demo`` adds simulated gateway agents so there is something to
watch. With ``--config`` it connects to the broker the file names instead.

Exit codes: 0 stopped cleanly; 1 runtime failure (broker could not start or be
reached); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from broker.cli_support import run_tool, setup_logging
from broker.credentials import Credentials, load_or_create_credentials
from broker.embedded import EmbeddedBroker
from broker.guarantees import guarantees_block
from broker.session import BusConfig, BusSession
from coordinator.anomaly.engine import AnomalyEngine
from coordinator.batch_job import BatchJobConfig
from coordinator.config import DEFAULT_CLIENT_ID, CoordinatorConfig
from coordinator.demo import SimulatedFleet
from coordinator.fleet_view import FleetView
from coordinator.ingest import Ingest
from coordinator.processor import FleetProcessor
from coordinator.services import Services
from coordinator.store.base import Store, open_store
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
               "  edge-coordinator start --config coordinator.toml   use the broker the file names",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start}")
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
    return parser


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


def _start(args: argparse.Namespace) -> int:
    config = CoordinatorConfig.load(args.config) if args.config else CoordinatorConfig()
    data_dir = args.data_dir or config.data_dir
    embedded: EmbeddedBroker | None = None
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
        embedded = EmbeddedBroker(host=args.host, port=port, data_dir=data_dir / "broker",
                                  credentials=[creds])
        embedded.start()
        bus_config = BusConfig(host=args.host, port=embedded.port, username=creds.username,
                               password=creds.password, client_id=client_id, clean_start=False,
                               protocol="3.1.1")  # amqtt speaks 3.1.1 only; skip the probe
        print(f"embedded broker listening on {args.host}:{embedded.port} (MQTT 3.1.1)")
        print(f"  watch it: mosquitto_sub -h {args.host} -p {embedded.port} -u {creds.username} "
              f"-P '{creds.password}' -t 'edgebus/#' -v")
        print(f"  decoded:  edge-bus sub -p {embedded.port} --credentials "
              f"{data_dir / 'broker' / 'credentials.json'} 'edgebus/#'")
        print(guarantees_block("embedded"))
    else:
        if config.broker is None:
            raise ConfigError("embedded_broker = false needs a [broker] table")
        bus_config = replace(config.broker, client_id=config.broker.client_id or client_id,
                             device=None)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = _open_store(config, data_dir)
    # The demo's agents start from nothing; learn for half a minute instead of two.
    online = {k: v for k, v in config.anomaly.items() if k != "batch"}  # [anomaly.batch] is the services'
    engine = AnomalyEngine(online or (DEMO_ANOMALY if args.demo else {}))
    bus = BusSession(bus_config)
    ingest = Ingest(bus, shared_group=config.shared_group, limits=config.ingest)
    processor = FleetProcessor(bus, ingest, store, engine, data_dir=data_dir)
    view = FleetView(ingest.sequence_snapshot, forecast=processor.forecast)
    processor.alert_listeners.append(lambda a: view.on_anomaly(a.device, f"{a.metric}: {a.explanation}"))
    services_config = config.services
    if args.demo and not config.batch_configured:
        services_config = replace(services_config, batch=BatchJobConfig.from_mapping(DEMO_BATCH))
    services = Services(bus, processor, store, services_config)
    processor.restore()
    ingest.sinks += [services.known, processor, view]
    ingest.start()
    print(f"history in the {config.store.get('type', 'sql')} store "
          f"({'SQLite in ' + str(data_dir) if not config.store.get('url') else 'store.url'}); "
          f"anomalies on {bus.topics.root}/_anomaly/+/+")
    fleet = SimulatedFleet(bus_config, count=args.agents) if args.demo else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        bus.start()
        if not bus.wait_connected(bus_config.connect_timeout + 5):
            raise BusError(f"cannot reach the broker at {bus_config.host}:{bus_config.port}: "
                           f"{bus.stats().last_error}")
        services.start()
        if fleet is not None:
            fleet.start()
            print(f"{len(fleet.agents)} simulated agents publishing metrics every second")
        _run_view(view, stop, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_tool("edge-coordinator", lambda: _start(args))
