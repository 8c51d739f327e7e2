"""The coordinator's configuration file: what ``edge-coordinator start --config`` reads.

Top-level keys and the ``[ingest]`` limits (coordinator/ingest_limits.py) are
checked here; the ``[store]`` and ``[anomaly]`` tables are checked by the parts
that use them when they are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from broker.config_file import load_toml
from broker.session import BusConfig
from coordinator.actions import parse_actions
from coordinator.batch_job import BatchJobConfig
from coordinator.cluster.config import ClusterConfig
from coordinator.fleet_decisions import DecisionsConfig
from coordinator.ha_anomalies import HomeAssistantConfig
from coordinator.http.config import HttpConfig
from coordinator.ingest_limits import IngestLimits
from coordinator.placement.config import PlacementConfig
from coordinator.services import ServicesConfig
from schemas.errors import ConfigError

__all__ = ["DEFAULT_CLIENT_ID", "CoordinatorConfig"]

#: A stable client id: the broker's persistent session keeps what arrives while the coordinator restarts.
DEFAULT_CLIENT_ID = "edgebus-coordinator"


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """The coordinator's configuration file (TOML). Unknown keys are errors."""

    data_dir: Path = Path("data")
    embedded_broker: bool = True
    broker: BusConfig | None = None
    #: ``[store]``: checked when the store opens (coordinator/store/config.py).
    store: Mapping[str, Any] = field(default_factory=dict)
    #: ``[anomaly]``: ``[anomaly.detector]``, ``[anomaly.metrics.<name or glob>]`` and
    #: ``[[anomaly.overrides]]`` (by device group, device glob, metric glob), checked when the engine is
    #: built (coordinator/anomaly/engine.py and overrides.py); ``[anomaly.batch]`` by the services.
    anomaly: Mapping[str, Any] = field(default_factory=dict)
    #: ``[ingest]``: what one message and one device may cost (coordinator/ingest_limits.py).
    ingest: IngestLimits = field(default_factory=IngestLimits)
    #: Split the streams with other coordinators through ``$share/{group}/...`` (not on amqtt): any
    #: member gets any message, so per-device accounting is split; ``[cluster]`` keeps each device on one.
    shared_group: str | None = None
    #: ``[[actions]]``, ``[home_assistant]`` and ``[anomaly.batch]`` (coordinator/services.py).
    services: ServicesConfig = field(default_factory=ServicesConfig)
    #: Whether ``[anomaly.batch]`` was given (the demo uses a shorter schedule otherwise).
    batch_configured: bool = False
    #: ``[http]``: the API and dashboard (coordinator/http/config.py).
    http: HttpConfig = field(default_factory=HttpConfig)
    #: Publish each device's stored acknowledgement after commits (coordinator/stored_acks.py), so
    #: agents keep samples until they are stored; false: agents rely on the broker's PUBACK alone.
    stored_acks: bool = True
    #: ``[placement]``: load balancing (coordinator/placement/); None (no table): nothing is placed.
    placement: PlacementConfig | None = None
    #: Mosquitto's log file on this host: its refused logins (and, with ``log_type debug``, its ACL
    #: denials) become audit records (broker/mosquitto_log.py). None: not followed.
    mosquitto_log: Path | None = None
    #: ``[decisions]``: the fleet decision log this coordinator consults (coordinator/fleet_decisions.py);
    #: None (no table): quarantines and model acceptances are not consulted.
    decisions: DecisionsConfig | None = None
    #: ``[cluster]``: several coordinators, each device on exactly one (coordinator/cluster/); None: this
    #: coordinator takes every device.
    cluster: ClusterConfig | None = None

    @classmethod
    def load(cls, path: Path) -> CoordinatorConfig:
        return cls.from_mapping(load_toml(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> CoordinatorConfig:
        known = ({f.name for f in fields(cls)} - {"services", "batch_configured"}) | {"actions",
                                                                                      "home_assistant"}
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        broker_section = data.get("broker")
        if broker_section is not None and not isinstance(broker_section, dict):
            raise ConfigError("broker must be a table ([broker])")
        # A stable client id by default: the persistent session keeps what arrives during a restart.
        broker = (BusConfig.from_mapping({"client_id": DEFAULT_CLIENT_ID, **broker_section})
                  if broker_section is not None else None)
        embedded = data.get("embedded_broker", broker is None)
        if not isinstance(embedded, bool):
            raise ConfigError(f"embedded_broker must be true or false, not {embedded!r}")
        for section in ("store", "anomaly"):
            if not isinstance(data.get(section, {}), dict):
                raise ConfigError(f"{section} must be a table ([{section}])")
        group = data.get("shared_group")
        if group is not None and (not isinstance(group, str) or not group or "/" in group):
            raise ConfigError(f"shared_group must be a name without '/', not {group!r}")
        if group is not None and embedded:
            raise ConfigError("shared_group needs a broker that delivers $share subscriptions "
                              "(Mosquitto, EMQX); the embedded broker does not")
        cluster = ClusterConfig.from_mapping(data.get("cluster"))
        if cluster is not None and group is not None:
            raise ConfigError("shared_group and [cluster] both split the streams; keep [cluster] (each "
                              "device on exactly one coordinator) and remove shared_group")
        if cluster is not None and embedded:
            raise ConfigError("[cluster] needs the broker every member connects to ([broker], "
                              "embedded_broker = false)")
        if cluster is not None and cluster.member is None and broker is not None \
                and broker.client_id == DEFAULT_CLIENT_ID:
            raise ConfigError("[cluster]: give each coordinator its own name: [cluster] member, or "
                              "[broker] client_id")
        stored_acks = data.get("stored_acks", True)
        if not isinstance(stored_acks, bool):
            raise ConfigError(f"stored_acks must be true or false, not {stored_acks!r}")
        mosquitto_log = data.get("mosquitto_log")
        if mosquitto_log is not None and (not isinstance(mosquitto_log, str) or not mosquitto_log):
            raise ConfigError(f"mosquitto_log must be the path of Mosquitto's log file, "
                              f"not {mosquitto_log!r}")
        anomaly = dict(data.get("anomaly", {}))
        services = ServicesConfig(batch=BatchJobConfig.from_mapping(anomaly.get("batch")),
                                  actions=tuple(parse_actions(data.get("actions"))),
                                  home_assistant=HomeAssistantConfig.from_mapping(data.get("home_assistant")))
        return cls(data_dir=Path(data.get("data_dir", "data")), embedded_broker=embedded,
                   broker=broker, store=data.get("store", {}), anomaly=anomaly,
                   ingest=IngestLimits.from_mapping(data.get("ingest")),
                   shared_group=group, services=services, batch_configured="batch" in anomaly,
                   http=HttpConfig.from_mapping(data.get("http")), stored_acks=stored_acks,
                   placement=PlacementConfig.from_mapping(data.get("placement")),
                   mosquitto_log=Path(mosquitto_log) if mosquitto_log is not None else None,
                   decisions=DecisionsConfig.from_mapping(data.get("decisions")), cluster=cluster)
