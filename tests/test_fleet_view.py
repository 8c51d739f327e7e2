"""The live view as an ingest sink: counts and latest values from column runs."""

from __future__ import annotations

from coordinator.fleet_view import FleetView
from coordinator.ingest import IngestBatch
from schemas.metrics import MetricColumns


def test_view_counts_samples_and_keeps_each_metrics_latest_value() -> None:
    now = [100.0]
    view = FleetView(lambda: {}, clock=lambda: now[0])
    run = MetricColumns("gw-1", 1, 0, ["cpu_percent", "temp_c"], [0, 1, 0, 1, 0], [1, 2, 3, 4, 5],
                        [10.0, 40.0, 11.0, 41.5, 12.5])
    other = MetricColumns("gw-2", 1, 7, ["cpu_percent"], [0, 0], [1, 2], [3.0, 4.0])
    view(IngestBatch(metric_runs=[run, other], statuses=[("gw-1", "online", 1)]))
    view(IngestBatch(metric_runs=[run.slice(0, 1)]))  # a later batch: cpu 10.0 is now the latest
    gw1, gw2 = view.devices["gw-1"], view.devices["gw-2"]
    assert (gw1.samples, gw2.samples) == (6, 2)
    assert gw1.last_values == {"cpu_percent": 10.0, "temp_c": 41.5}
    assert gw2.last_values == {"cpu_percent": 4.0}
    line = next(li for li in view.table().splitlines() if li.startswith("gw-1"))
    assert "online" in line and "10.0" in line and "41.5" in line
