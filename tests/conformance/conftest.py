"""Fixtures of the conformance battery: each case runs once per broker.

``conformance_broker`` is Mosquitto (the reference: it must pass every case),
the embedded broker as ``broker.embedded`` starts it, and any candidate named
in ``EDGEBUS_CONFORMANCE_CANDIDATES`` (see :mod:`tests.conformance.candidates`).

A case a broker is known to fail carries ``@pytest.mark.broker_fails(kind=
"why")``; for that broker only it becomes ``xfail(strict=True)``, so the
battery stays green and honest: the day the broker is fixed, the strict
xfail turns red and the mark must go.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.brokers import EmbeddedUnderTest, MosquittoUnderTest, RunningBroker, started
from tests.conformance.candidates import candidate, configured_candidates
from tests.conformance.raw_client import RawClient

#: Topics the battery publishes to; ``$conformance/...`` tests `$`-topics.
DOLLAR_ROOT = "$conformance"

KINDS = ("mosquitto", "embedded", *configured_candidates())
#: A candidate that is amqtt like the embedded broker fails what the embedded broker
#: still fails, and what a mark names it for (``amqtt_db=...``: amqtt without
#: edgebus's fixes; ``amqtt_db=None``: passes there).
_FAILS_LIKE = {"amqtt_db": "embedded"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "broker_fails(**reasons): expected failure (strict) on the named brokers")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("broker_fails")
        callspec = getattr(item, "callspec", None)
        if mark is None or callspec is None:
            continue
        kind = callspec.params.get("conformance_broker")
        reason = mark.kwargs[kind] if kind in mark.kwargs else mark.kwargs.get(
            _FAILS_LIKE.get(kind, ""))
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"{kind}: {reason}"))


def _mosquitto(workdir: Path) -> MosquittoUnderTest:
    running = MosquittoUnderTest(workdir)
    # The generated ACL's last user is the admin. The battery tests MQTT, not
    # edgebus's ACL, so the admin may use every topic; `#` does not reach `$`
    # topics (MQTT 3.1.1 §4.7.2), so the `$`-topic case needs a line of its own.
    with running.files.acl.open("a") as acl:
        acl.write(f"topic readwrite #\ntopic readwrite {DOLLAR_ROOT}/#\n")
    return running


@pytest.fixture(params=KINDS)
def conformance_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningBroker]:
    """A fresh broker of each kind on a free port, with a user allowed everything."""
    kind = request.param
    running: RunningBroker
    if kind == "mosquitto":
        running = _mosquitto(tmp_path / "mosquitto")
    elif kind == "embedded":
        running = EmbeddedUnderTest(tmp_path / "embedded")
    else:
        running = candidate(kind, tmp_path / kind)
    yield from started(running)


@pytest.fixture
def topic_root() -> str:
    """A topic prefix of this test's own, under the root the admin may use."""
    return f"edgebus/conformance/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(conformance_broker: RunningBroker) -> Iterator[Callable[..., RawClient]]:
    """``client(name, auto_ack=True, mqtt5=False)``: a raw client; closed after the test."""
    made: list[RawClient] = []
    run = uuid.uuid4().hex[:6]

    def make(name: str, *, auto_ack: bool = True, mqtt5: bool = False) -> RawClient:
        port = conformance_broker.port
        if mqtt5:
            port = getattr(conformance_broker, "mqtt5_port", port)
        raw = RawClient(conformance_broker.host, port, f"conf-{run}-{name}",
                        username=conformance_broker.username,
                        password=conformance_broker.password, auto_ack=auto_ack, mqtt5=mqtt5)
        made.append(raw)
        return raw

    yield make
    for raw in made:
        raw.close()
