"""The agent process: one device on the bus, its metrics, its cameras, its commands.

Everything periodic runs on the main thread through :class:`~broker.scheduler.Scheduler`
(sampling, batching, readable state, shedding, the systemd watchdog); the bus
session runs its own network thread, camera pipelines their own capture and
detect threads. Stopping is graceful: cameras flush their current batch, the
last metrics batch is queued, and the session gets ``stop_timeout`` seconds to
deliver the outbox before it says ``offline``; whatever is left stays on disk
for the next start.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from agents.capacity import HostCapacity
from agents.collectors.base import Collector, CollectorContext, create_collector
from agents.config import AgentConfig, MetricsConfig
from agents.extension import AgentExtension
from agents.pressure import PressureGauge
from agents.report_by_exception import DeadbandFilter
from agents.shedding import Pressure, SheddingPolicy
from agents.systemd import SystemdNotifier
from broker.scheduler import Scheduler
from broker.session import BusSession
from broker.telemetry import MetricsPublisher, birth_payload
from schemas.errors import ConfigError
from schemas.messages import MetricSample

__all__ = ["EXIT_RESTART", "Agent", "agent_version"]

logger = logging.getLogger(__name__)

#: Priorities (see agents/shedding.py): 0 never sheds.
PRIORITY_CORE = 0
PRIORITY_STATE = 1
STATUS_LOG_INTERVAL = 60.0
#: The exit status asking the service manager for a restart (EX_TEMPFAIL): an update switched
#: ``current`` to another slot and the agent from there must take over.
EXIT_RESTART = 75


def agent_version() -> str:
    try:
        return importlib.metadata.version("edgebus")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class _Health(CollectorContext):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def agent_health(self) -> Mapping[str, float]:
        return self.agent.health()


class Agent:
    """One device's agent. ``run()`` blocks until :meth:`request_stop` (or a signal handler)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        notifier: SystemdNotifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self.device = config.device.id
        self.notifier = notifier or SystemdNotifier()
        self._clock = clock
        self._wall_ms = wall_ms
        self._stop = threading.Event()
        config.device.data_dir.mkdir(parents=True, exist_ok=True)
        self.session = BusSession(config.broker)
        self.metrics = MetricsPublisher(self.session, clock_ms=wall_ms)
        self.policy = SheddingPolicy(high=config.shedding.high, low=config.shedding.low,
                                     dwell_s=config.shedding.dwell)
        self._pressure = PressureGauge(self.session.outbox)
        self.scheduler = Scheduler(self.policy)
        self.collectors: list[Collector] = [
            create_collector(name, config.metrics.collector_options.get(name, {}), _Health(self))
            for name in config.metrics.collectors]
        self.deadband = self._deadband_filter(config.metrics)
        self.latest: dict[str, float] = {}
        self._pending: list[MetricSample] = []
        self._pending_lock = threading.Lock()
        self.batches_published = 0
        self.samples_collected = 0
        self.capabilities: list[str] = ["metrics"]
        #: Component versions in the birth; parts add theirs (the OTA part: slot and bundle).
        self.versions = {"python": platform.python_version(), "platform": platform.platform()}
        #: Cores, memory, accelerators and (measured after start) detector speeds, for the balancer.
        self.capacity = HostCapacity()
        self.birth = birth_payload(
            self.device, self.metrics.epoch, agent_version=agent_version(),
            capabilities=self.capabilities, versions=self.versions, groups=self.config.device.groups,
            clock_ms=self._wall_ms, capacity=self.capacity)
        self.session.set_birth(self.birth)
        self._extensions: list[AgentExtension] = []
        #: What ``edge-agent run`` exits with; a part may ask for a restart (:data:`EXIT_RESTART`).
        self.exit_code = 0

    @staticmethod
    def _deadband_filter(mc: MetricsConfig) -> DeadbandFilter | None:
        if not mc.report_by_exception:
            return None
        return DeadbandFilter(deadbands=dict(mc.deadbands), default_deadband=mc.deadband,
                              heartbeat_ms=int(mc.heartbeat * 1000))

    def apply_config(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The ``config`` command: change the ``[metrics]`` settings without a restart.

        ``args`` is ``{"metrics": {...}}`` with any of the table's keys; the result
        is checked as strictly as the file. Collectors and broker settings need a
        restart; cameras change with ``assign`` / ``unassign``.
        """
        unsupported = sorted(set(args) - {"metrics"})
        if unsupported:
            raise ConfigError(f"config: {', '.join(unsupported)} cannot change at run time (only "
                              "metrics; cameras change with assign/unassign, the rest on restart)")
        changes = args.get("metrics")
        if not isinstance(changes, Mapping) or not changes:
            raise ConfigError("config: args.metrics must be a non-empty table of [metrics] keys")
        old = self.config.metrics
        current: dict[str, Any] = {
            "interval": old.interval, "batch_interval": old.batch_interval,
            "collectors": list(old.collectors), "report_by_exception": old.report_by_exception,
            "deadband": old.deadband, "deadbands": dict(old.deadbands), "heartbeat": old.heartbeat,
            **{name: dict(table) for name, table in old.collector_options.items()}}
        new = MetricsConfig.from_mapping({**current, **changes})
        if new.collectors != old.collectors or new.collector_options != old.collector_options:
            raise ConfigError("config: metrics collectors and their tables change on restart only")
        changed = sorted(k for k in changes if current.get(k) != getattr(new, k, changes[k]))
        for job in self.scheduler.jobs:
            if job.name in ("sample", "shedding"):
                job.interval = new.interval
            elif job.name in ("publish", "state"):
                job.interval = new.batch_interval
        self.deadband = self._deadband_filter(new)
        self.config = replace(self.config, metrics=new)
        logger.info("configuration changed by command: %s", ", ".join(changed) or "nothing")
        return {"changed": changed}

    # -- what collectors and status read --------------------------------

    def health(self) -> dict[str, float]:
        stats = self.session.stats()
        return {
            "outbox_depth": stats.outbox_depth,
            "outbox_bytes": stats.outbox_bytes,
            "dropped_total": self.session.outbox.dropped,
            # Batches waiting for the coordinator's stored acknowledgement, and those given up unconfirmed.
            "outbox_unconfirmed": stats.awaiting_confirmation,
            "outbox_evicted_total": stats.evicted,
            "publish_latency_ms": round(stats.ack_latency_ms, 2),
            "connection_losses_total": stats.connection_losses,
            "shed_level": self.policy.level,
            "shed_level_changes_total": self.policy.changes,
            "shed_total": self.scheduler.shed_total,
            "job_failures_total": self.scheduler.failures_total,
            **({"suppressed_total": self.deadband.suppressed} if self.deadband else {}),
        }

    def pressure(self) -> Pressure:
        """What shedding reads: this process's CPU share, memory, outbox fill (agents/pressure.py)."""
        return self._pressure.read()

    # -- periodic jobs --------------------------------------------------

    def _sample(self, now: float) -> None:
        time_ms = self._wall_ms()
        samples: list[MetricSample] = []
        for collector in self.collectors:
            if not self.policy.allows(collector.PRIORITY):
                continue
            try:
                samples += collector.collect(time_ms)
            except Exception:
                logger.exception("collector %s failed", collector.NAME)
        for ext in self._extensions:
            try:
                samples += ext.collect(time_ms)
            except Exception:
                logger.exception("%s collect failed", ext.name)
        self.samples_collected += len(samples)
        for s in samples:
            self.latest[s.name] = s.value
        if self.deadband is not None:
            samples = self.deadband.admit(samples)
        with self._pending_lock:
            self._pending += samples

    def publish_batch(self, now: float = 0.0) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if batch and self.metrics.publish(batch):
            self.batches_published += 1

    def _each_extension(self, what: str, call: Callable[[AgentExtension], object],
                        extensions: list[AgentExtension] | None = None) -> None:
        for ext in self._extensions if extensions is None else extensions:
            try:
                call(ext)
            except Exception:
                logger.exception("%s %s failed", ext.name, what)

    def _publish_state(self, now: float) -> None:
        latest = dict(self.latest)
        self._each_extension("on_state", lambda ext: ext.on_state(latest))

    def _update_shedding(self, now: float) -> None:
        before = self.policy.level
        level = self.policy.update(self.pressure(), now)
        if level != before:
            logger.warning("load shedding level %d -> %d", before, level)
            self._each_extension("on_shedding", lambda ext: ext.on_shedding(self.policy))

    def _log_status(self, now: float) -> None:
        stats = self.session.stats()
        line = (f"connected={stats.connected} batches={self.batches_published} "
                f"outbox={stats.outbox_depth} dropped={self.session.outbox.dropped} "
                f"shed_level={self.policy.level}")
        if stats.refused_subscriptions:
            line += f" refused_subscriptions={','.join(stats.refused_subscriptions)}"
        logger.info("status: %s", line)
        self.notifier.status(line)

    # -- life cycle -----------------------------------------------------

    def add_extension(self, extension: AgentExtension) -> None:
        self._extensions.append(extension)

    def start(self) -> None:
        mc = self.config.metrics
        now = self._clock()
        self.scheduler.add("sample", mc.interval, self._sample, start=now, priority=PRIORITY_CORE)
        self.scheduler.add("publish", mc.batch_interval, self.publish_batch,
                           start=now + mc.batch_interval, priority=PRIORITY_CORE)
        self.scheduler.add("state", mc.batch_interval, self._publish_state, start=now + mc.interval,
                           priority=PRIORITY_STATE)
        if self.config.shedding.enabled:
            self.scheduler.add("shedding", mc.interval, self._update_shedding, start=now,
                               priority=PRIORITY_CORE)
        self.scheduler.add("status", STATUS_LOG_INTERVAL, self._log_status,
                           start=now + STATUS_LOG_INTERVAL, priority=PRIORITY_CORE)
        if self.notifier.watchdog_interval:
            self.scheduler.add("watchdog", self.notifier.watchdog_interval,
                               lambda _now: self.notifier.watchdog(), start=now,
                               priority=PRIORITY_CORE)
        # Parts subscribe before the first connection, so their subscriptions go out
        # ahead of the retained ``online``: whoever sees the device online can command it.
        self._each_extension("start", lambda ext: ext.start())
        self.session.start()
        self.notifier.ready(f"device {self.device} started")
        logger.info("agent %s started (%d collectors, %d extensions)", self.device,
                    len(self.collectors), len(self._extensions))

    def request_stop(self, exit_code: int | None = None) -> None:
        """Stop soon (thread-safe); ``exit_code`` sets what the process exits with."""
        if exit_code is not None:
            self.exit_code = exit_code
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, stop_timeout: float = 10.0) -> None:
        """Start, run the scheduler until asked to stop, then stop gracefully."""
        self.start()
        try:
            while not self._stop.is_set():
                self.scheduler.run_due(self._clock())
                due = self.scheduler.next_due()
                wait = 1.0 if due is None else due - self._clock()
                self._stop.wait(max(0.0, min(1.0, wait)))
        finally:
            self.stop(stop_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.notifier.stopping()
        self._each_extension("stop", lambda ext: ext.stop(), list(reversed(self._extensions)))
        self.publish_batch()
        self.session.stop(flush_timeout=timeout)
        logger.info("agent %s stopped: %s", self.device, json.dumps(self.health()))
