"""Property-based testing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid, against a real
coordinator fed through Mosquitto; every response is checked against the
document (status codes, content types, bodies) and none may be a 5xx.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from coordinator.http.app import build_app
from coordinator.http.context import ApiContext
from coordinator.store.base import Store
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import wait_until
from tests.http_helpers import TOKEN, Sender, api_coordinator, metrics_batch, normal

pytestmark = pytest.mark.integration

EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenApiSchema]:
    tmp = tmp_path_factory.mktemp("openapi")
    broker = MosquittoUnderTest(tmp / "mosquitto")
    broker.start()
    try:
        with api_coordinator(broker, tmp / "coordinator") as api:
            sender = Sender(broker)
            try:  # something to find: a device with samples, an anomaly, camera events and detections
                sender.publish("edgebus/gw-9/status", "online", retain=True)
                sender.publish("edgebus/gw-9/metrics", metrics_batch("gw-9", 0, normal(50, 0)))
                sender.publish("edgebus/gw-9/metrics", metrics_batch("gw-9", 50, [97.0]))
                end = {"type": "end", "camera": "front", "track_id": 1, "label": "person", "time_ms": 1_000,
                       "snapshot_jpeg_b64": base64.b64encode(b"\xff\xd8\xff\xd9").decode()}
                sender.publish("edgebus/gw-9/events/front", json.dumps(end))
                sender.flush()
                assert wait_until(lambda: len(api.store.anomalies()) == 1
                                  and len(api.store.events("gw-9")) == 1)
            finally:
                sender.stop()
            schema = schemathesis.openapi.from_url(api.url + "api/v1/openapi.json")
            yield schema
    finally:
        broker.stop()


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) of every documented operation, read from the app (no server needed);
    invalid requests only where there is a parameter or a body to get wrong."""
    document = build_app(ApiContext(store=cast(Store, None))).openapi()
    cases = []
    for path, methods in sorted(document["paths"].items()):
        for method, operation in methods.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


# schemathesis' own pytest plugin (from_fixture) does not run under pytest 9 (it reads a removed
# attribute), so each operation is a plain parametrized test driving Hypothesis itself.
#
# Every check runs but "schema-valid request rejected" (positive_data_acceptance): some rules
# cannot be written in OpenAPI (a calendar date that exists, since before until, a cursor this
# API gave out), and a request breaking them gets a documented 400 whose JSON body is still
# checked against the document. Server errors and undocumented answers are all still failures.
@pytest.mark.parametrize(("method", "path", "mode"), _cases(),
                         ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_every_operation_answers_as_documented_and_never_with_a_server_error(
        api_schema: OpenApiSchema, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                               excluded_checks=[positive_data_acceptance])

    run()


def test_the_document_lists_every_route(api_schema: OpenApiSchema) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/api/v1/devices", "/api/v1/devices/{device}",
            "/api/v1/devices/{device}/metrics/{metric}/history", "/api/v1/events",
            "/api/v1/devices/{device}/detections", "/api/v1/anomalies",
            "/api/v1/anomalies/{anomaly_id}/acknowledge", "/api/v1/coordination", "/api/v1/export.csv",
            "/api/v1/fleet", "/metrics", "/healthz", "/readyz"} <= paths
