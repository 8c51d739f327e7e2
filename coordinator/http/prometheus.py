"""``GET /metrics``: the coordinator's figures in the Prometheus text format.

A collector reads the running coordinator at scrape time (nothing is counted
twice and no global registry is touched, so several coordinators can live in
one test process). Families, all prefixed ``edgebus_``:

* fleet: ``devices{status}``, ``device_online{device}``, ``device_last_seen_timestamp_seconds{device}``,
  ``device_samples_received_total{device}``, ``device_samples_missing{device}``,
  ``device_samples_duplicate_total{device}``, ``device_anomalies_total{device}``;
* ingest: ``ingest_messages_total``, ``ingest_samples_total``, ``ingest_detections_total``,
  ``ingest_duplicates_total``, ``ingest_dead_letters_total{reason}``, ``ingest_queue_depth``,
  ``ingest_sink_errors_total``;
* store: ``store_samples_written_total``, ``store_write_errors_total``, ``store_write_retries_total``;
* anomalies: ``anomalies_total`` (since start), ``anomalies_open`` (not acknowledged);
* broker: ``broker_connected``, ``broker_connection_losses_total``,
  ``broker_refused_subscriptions`` (filters refused and being asked for again);
* live feed: ``live_clients``, ``live_clients_dropped_total``, ``live_messages_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.http.context import ApiContext, api_context

__all__ = ["CONTENT_TYPE", "CoordinatorCollector", "registry_for", "router"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "edgebus_"

router = APIRouter(tags=["operations"])


class CoordinatorCollector(Collector):
    """Reads one coordinator's figures on every scrape."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        yield from self._fleet()
        yield from self._ingest()
        yield from self._live()

    def _fleet(self) -> Iterator[Metric]:
        ctx = self.ctx
        devices = ctx.store.devices()
        by_status = GaugeMetricFamily(P + "devices", "Devices the coordinator knows, by last status",
                                      labels=["status"])
        counts: dict[str, int] = {}
        for d in devices:
            counts[d.last_status or "unknown"] = counts.get(d.last_status or "unknown", 0) + 1
        for status in sorted(set(counts) | {"online", "offline"}):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        online = GaugeMetricFamily(P + "device_online", "1 while the device's status is online",
                                   labels=["device"])
        seen = GaugeMetricFamily(P + "device_last_seen_timestamp_seconds",
                                 "When the coordinator last stored anything from the device",
                                 labels=["device"])
        for d in devices:
            online.add_metric([d.id], 1.0 if d.last_status == "online" else 0.0)
            seen.add_metric([d.id], d.last_seen_ms / 1000)
        yield online
        yield seen
        sequences = ctx.ingest.sequence_snapshot() if ctx.ingest is not None else {}
        received = CounterMetricFamily(P + "device_samples_received", "Samples received per stream",
                                       labels=["device"])
        missing = GaugeMetricFamily(P + "device_samples_missing",
                                    "Sequence numbers not received (lost so far)", labels=["device"])
        duplicate = CounterMetricFamily(P + "device_samples_duplicate", "Samples received more than once",
                                        labels=["device"])
        for stream, seq in sorted(sequences.items()):
            received.add_metric([stream], seq.received)
            missing.add_metric([stream], seq.missing)
            duplicate.add_metric([stream], seq.duplicates)
        yield received
        yield missing
        yield duplicate
        anomalies = CounterMetricFamily(P + "device_anomalies", "Anomalies found per device since start",
                                        labels=["device"])
        if ctx.view is not None:
            for name, row in sorted(ctx.view.live().items()):
                anomalies.add_metric([name], row.anomalies)
        yield anomalies
        yield GaugeMetricFamily(P + "anomalies_open", "Anomalies not acknowledged (counted up to 10000)",
                                value=len(ctx.store.anomaly_page(acknowledged=False, limit=10_000)))

    def _ingest(self) -> Iterator[Metric]:
        ctx = self.ctx
        if ctx.ingest is not None:
            s = ctx.ingest.stats()
            for name, value, text in (("messages", s.messages, "MQTT messages taken in"),
                                      ("samples", s.samples, "New metric samples decoded"),
                                      ("detections", s.detections, "Detections decoded"),
                                      ("duplicates", s.duplicates, "Redelivered samples and frames dropped"),
                                      ("sink_errors", s.sink_errors, "Batches a sink failed on")):
                yield CounterMetricFamily(P + "ingest_" + name, text, value=value)
            dead = CounterMetricFamily(P + "ingest_dead_letters",
                                       "Messages that could not be used, by reason", labels=["reason"])
            for reason, n in sorted(s.dead_letters.items()):
                dead.add_metric([reason], n)
            yield dead
            yield GaugeMetricFamily(P + "ingest_queue_depth", "Messages received and not yet decoded",
                                    value=s.queue_depth)
        if ctx.processor is not None:
            p = ctx.processor
            yield CounterMetricFamily(P + "store_samples_written", "Samples stored", value=p.stored_samples)
            yield CounterMetricFamily(P + "store_write_errors", "Batches the store refused",
                                      value=p.write_errors)
            yield CounterMetricFamily(P + "store_write_retries",
                                      "Writes repeated while the store was unavailable",
                                      value=p.write_retries)
            yield CounterMetricFamily(P + "anomalies", "Anomalies found since start", value=p.alerts)
        if ctx.session is not None:
            b = ctx.session.stats()
            yield GaugeMetricFamily(P + "broker_connected", "1 while the coordinator's broker session is up",
                                    value=1.0 if b.connected else 0.0)
            yield CounterMetricFamily(P + "broker_connection_losses", "Broker connections lost",
                                      value=b.connection_losses)
            yield GaugeMetricFamily(P + "broker_refused_subscriptions",
                                    "Subscriptions the broker refused, being asked for again",
                                    value=len(b.refused_subscriptions))

    def _live(self) -> Iterator[Metric]:
        feed = self.ctx.feed
        yield GaugeMetricFamily(P + "live_clients", "WebSocket live-feed clients connected",
                                value=feed.client_count)
        yield CounterMetricFamily(P + "live_clients_dropped",
                                  "Live-feed clients closed for reading too slowly",
                                  value=feed.dropped_clients)
        yield CounterMetricFamily(P + "live_messages", "Live-feed messages produced", value=feed.messages)


def registry_for(ctx: ApiContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CoordinatorCollector(ctx))
    return registry


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)",
            responses={200: {"content": {"text/plain": {}}, "description": "the text exposition format"}})
def metrics(ctx: Annotated[ApiContext, Depends(api_context)]) -> Response:
    return Response(generate_latest(registry_for(ctx)), media_type=CONTENT_TYPE)
