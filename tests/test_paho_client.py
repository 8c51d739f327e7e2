"""The hooks into paho's private parts: present in the pinned paho, engaged, and optional."""

from __future__ import annotations

import inspect
import logging
import re
import socket
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import broker.paho_client
from broker.buffered_socket import BufferedSocket
from broker.paho_client import SOCKET_FACTORY, WAKE_SOCKET, FewerSyscallsClient, _LoopWaker
from broker.session import BusSession
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import WAIT, Inbox, config_for

REPO = Path(__file__).resolve().parents[1]


def test_the_installed_paho_is_the_pinned_one() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in dependencies if d.startswith("paho-mqtt")]
    assert len(pins) == 1 and re.fullmatch(r"paho-mqtt==[\d.]+", pins[0]), pins
    assert version("paho-mqtt") == pins[0].split("==")[1]


def test_paho_has_the_private_names_the_hooks_use_in_the_expected_shape() -> None:
    factory = vars(mqtt.Client)[SOCKET_FACTORY]
    assert list(inspect.signature(factory).parameters) == ["self"]
    assert f"self.{SOCKET_FACTORY}()" in inspect.getsource(mqtt.Client.reconnect)
    # paho writes its wake-up byte through the attribute for every packet it queues
    assert f"self.{WAKE_SOCKET}.send(" in inspect.getsource(mqtt.Client._packet_queue)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    assert getattr(client, WAKE_SOCKET) is None
    client.loop(0)  # not connected: the loop only creates its socket pair
    try:
        assert isinstance(getattr(client, WAKE_SOCKET), socket.socket)
    finally:
        client._reset_sockets()


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts connections and never answers: enough to open paho's socket."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield "127.0.0.1", server.getsockname()[1]


def connected_client(address: tuple[str, int]) -> FewerSyscallsClient:
    client = FewerSyscallsClient(CallbackAPIVersion.VERSION2, client_id="hooks")
    client.connect(*address)
    client.loop(0)
    return client


def test_the_hooks_engage(listener: tuple[str, int]) -> None:
    client = connected_client(listener)
    try:
        assert isinstance(client.socket(), BufferedSocket)
        assert isinstance(getattr(client, WAKE_SOCKET), _LoopWaker)
        assert client.unengaged_hooks() == []
    finally:
        client.disconnect()


def test_hooks_that_find_nothing_to_hook_are_named_and_paho_runs_without_them(
        listener: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # What a paho that renamed both would look like: our override is never called,
    # and the attribute we wrap is not there.
    monkeypatch.delattr(FewerSyscallsClient, SOCKET_FACTORY)
    monkeypatch.setattr(broker.paho_client, "WAKE_SOCKET", "_renamed_by_paho")
    client = connected_client(listener)
    try:
        assert isinstance(client.socket(), socket.socket)
        assert client.unengaged_hooks() == [SOCKET_FACTORY, "_renamed_by_paho"]
    finally:
        client.disconnect()


@pytest.mark.integration
def test_a_session_warns_when_the_hooks_do_not_engage_and_still_works(
        mosquitto_broker: MosquittoUnderTest, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delattr(FewerSyscallsClient, SOCKET_FACTORY)
    monkeypatch.setattr(broker.paho_client, "WAKE_SOCKET", "_renamed_by_paho")
    inbox = Inbox()
    with caplog.at_level(logging.WARNING, logger="broker.session"), \
            BusSession(config_for(mosquitto_broker, client_id="plain-paho")) as bus:
        assert bus.subscribe("edgebus/plain/#", inbox).wait_subscribed(WAIT)
        for i in range(50):
            assert bus.publish(f"edgebus/plain/{i}", str(i).encode())
        assert inbox.wait_for(lambda ms: len(ms) == 50)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("_create_socket and _renamed_by_paho did not engage" in w for w in warnings), warnings


@pytest.mark.integration
def test_the_session_warns_nothing_when_the_hooks_engage(
        mosquitto_broker: MosquittoUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="broker.session"), \
            BusSession(config_for(mosquitto_broker, client_id="hooked")) as bus:
        assert bus.wait_connected(WAIT)
    assert "did not engage" not in caplog.text
