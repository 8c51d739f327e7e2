"""The agent's command dispatcher and Home Assistant publisher against real brokers."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from agents.commands.dispatcher import REASONS, CommandDispatcher
from agents.commands.handlers import rebirth_handler
from agents.home_assistant.publisher import HomeAssistantPublisher
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from broker.telemetry import birth_payload
from schemas.command import Command
from schemas.errors import CodecError, ConfigError
from schemas.ha_discovery import CameraEntities, DeviceDescription, describe_metric, device_discovery
from schemas.messages import Birth, MetricSample, MetricsBatch, decode_record, encode_record
from tests import bus_helpers
from tests.brokers import MqttProbe, RunningBroker

pytestmark = pytest.mark.integration

WAIT = 15.0  # upper bound for one wait; the happy path takes milliseconds
DEVICE = "gw-1"
# Under the device's own tree: the generated ACL lets a device write nowhere else.
REPLIES = f"edgebus/{DEVICE}/replies"
_ids = itertools.count()


def config_for(broker: RunningBroker, **overrides: object) -> BusConfig:
    base = BusConfig(host=broker.host, port=broker.port, username=broker.username,
                     password=broker.password, reconnect_min_delay=0.05, reconnect_max_delay=0.5,
                     clean_start=True, client_id=f"test-{next(_ids)}",
                     protocol="3.1.1" if not broker.speaks_mqtt5 else "auto")
    return replace(base, **overrides)  # type: ignore[arg-type]


class Inbox(bus_helpers.Inbox):
    """Messages from a subscription, with the command replies among them."""

    def replies(self, command_id: str | None, name: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            messages = list(self.messages)
        out = []
        for m in messages:
            try:
                body = json.loads(m.payload)
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("id") == command_id and \
                    (name is None or body.get("name") == name):
                out.append(body)
        return out

    def answered(self, command_id: str, timeout: float) -> bool:
        """Whether a reply to ``command_id`` arrives within ``timeout`` (no assertion)."""
        return self.wait_for(lambda _: bool(self.replies(command_id)), timeout)

    def wait_reply(self, command_id: str | None, name: str | None = None,
                   count: int = 1) -> dict[str, Any]:
        assert self.wait_for(lambda _: len(self.replies(command_id, name)) >= count), \
            f"no reply #{count} to {command_id} / {name}"
        return self.replies(command_id, name)[count - 1]


@dataclass
class Agent:
    session: BusSession
    dispatcher: CommandDispatcher
    coordinator: BusSession
    inbox: Inbox
    calls: list[tuple[str, dict[str, Any]]]

    def send(self, name: str, args: dict[str, Any] | None = None, *, command_id: str | None = None,
             reply_to: str | None = REPLIES, device: str = DEVICE) -> str:
        command_id = command_id or f"c-{next(_ids)}"
        command = Command(device=device, name=name, command_id=command_id, time_ms=1,
                          args=args or {}, reply_to=reply_to)
        self.send_raw(name, encode_record(command))
        return command_id

    def send_raw(self, topic_name: str, payload: bytes) -> None:
        assert self.coordinator.publish(self.coordinator.topics.cmd(DEVICE, topic_name), payload)

    def ran(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)


def start_device(broker: RunningBroker) -> BusSession:
    session = BusSession(config_for(broker, device=DEVICE, client_id=f"edgebus-{DEVICE}"))
    session.set_birth(birth_payload(DEVICE, 1, agent_version="test"))
    return session


@pytest.fixture
def agent(broker: RunningBroker) -> Iterator[Agent]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(name: str, result: Any = None) -> Callable[[Command], Any]:
        def handle(command: Command) -> Any:
            calls.append((name, dict(command.args)))
            return result
        return handle

    def config(command: Command) -> Any:
        calls.append(("config", dict(command.args)))
        if "interval_s" in command.args and not isinstance(command.args["interval_s"], int):
            raise ConfigError("config.interval_s must be an integer")
        return {"changed": sorted(command.args)}

    def explode(command: Command) -> Any:
        calls.append(("explode", {}))
        raise RuntimeError("handler bug")

    def strict(command: Command) -> Any:
        calls.append(("strict", {}))
        raise CodecError("args.level must be a number")

    handlers = {"config": config, "assign": record("assign", {"assigned": True}),
                "unassign": record("unassign"), "ping": record("ping", "pong"),
                "explode": explode, "strict": strict, "ota/chunk": record("ota/chunk")}
    inbox = Inbox()
    coordinator = BusSession(config_for(broker))
    coordinator.subscribe(f"{REPLIES}/#", inbox)
    coordinator.subscribe(f"edgebus/{DEVICE}/state/last_command", inbox)
    coordinator.start()
    assert coordinator.wait_connected(WAIT), coordinator.stats().last_error
    session = start_device(broker)
    dispatcher = CommandDispatcher(session, DEVICE, handlers).start()
    session.start()
    assert session.wait_connected(WAIT), session.stats().last_error
    agent = Agent(session, dispatcher, coordinator, inbox, calls)
    wait_until_listening(agent)
    try:
        yield agent
    finally:
        dispatcher.stop()
        session.stop()
        coordinator.stop()


def wait_until_listening(agent: Agent) -> None:
    """Ping until answered: the subscriptions on both sides are then in place."""
    for _ in range(30):
        command_id = agent.send("ping")
        if agent.inbox.answered(command_id, timeout=0.5):
            return
    raise AssertionError("the dispatcher never answered a ping")


def test_good_command_runs_its_handler_once_and_is_answered(agent: Agent) -> None:
    command_id = agent.send("config", {"interval_s": 5, "cameras": ["front"]})
    reply = agent.inbox.wait_reply(command_id)
    assert reply == {"id": command_id, "name": "config", "device": DEVICE, "ok": True,
                     "result": {"changed": ["cameras", "interval_s"]}}
    assert agent.calls.count(("config", {"interval_s": 5, "cameras": ("front",)})) == 1

    # Multi-level names work, and without reply_to the answer lands on state/last_command.
    chunk_id = agent.send("ota/chunk", {"n": 1}, reply_to=None)
    reply = agent.inbox.wait_reply(chunk_id)
    assert reply["ok"] is True and reply["name"] == "ota/chunk"
    assert agent.ran("ota/chunk") == 1
    assert any(m.topic == "edgebus/gw-1/state/last_command" and json.loads(m.payload)["id"] == chunk_id
               for m in agent.inbox.messages)
    stats = agent.dispatcher.stats()
    assert stats.succeeded >= 3 and stats.failed == 0  # pings, config, chunk


def test_last_command_is_retained(agent: Agent, broker: RunningBroker) -> None:
    command_id = agent.send("assign", {"camera": "front", "source": "rtsp://cam/1"}, reply_to=None)
    agent.inbox.wait_reply(command_id)
    assert agent.session.flush(WAIT)
    with MqttProbe(broker, "late-reader") as probe:
        probe.connected()
        probe.subscribe("edgebus/gw-1/state/last_command")
        message = probe.expect(WAIT)
        assert message.retain
        assert json.loads(message.payload)["id"] == command_id


def test_duplicate_command_id_is_answered_without_running_again(agent: Agent) -> None:
    first = agent.send("assign", {"camera": "front"}, command_id="dup-1")
    agent.inbox.wait_reply(first)
    agent.send("assign", {"camera": "front"}, command_id="dup-1")
    second = agent.inbox.wait_reply("dup-1", count=2)
    assert second == agent.inbox.replies("dup-1")[0]
    assert second["ok"] is True and second["result"] == {"assigned": True}
    assert agent.ran("assign") == 1
    assert agent.dispatcher.stats().duplicates == 1

    # A failed command is not re-run either: its error is repeated.
    agent.send("config", {"interval_s": "fast"}, command_id="dup-2")
    agent.inbox.wait_reply("dup-2")
    agent.send("config", {"interval_s": "fast"}, command_id="dup-2")
    again = agent.inbox.wait_reply("dup-2", count=2)
    assert again["ok"] is False and again["reason"] == "rejected"
    assert agent.ran("config") == 1
    assert agent.dispatcher.stats().errors["rejected"] == 1


def test_bad_input_is_answered_counted_and_survived(agent: Agent) -> None:
    metrics = MetricsBatch(device=DEVICE, epoch=1, first_seq=0,
                           samples=(MetricSample(1, "cpu_percent", 1.0),))
    birth = Birth(device=DEVICE, epoch=1, agent_version="x", time_ms=1)
    # Undecodable payloads carry no reply_to: their errors go to last_command, named by topic.
    agent.send_raw("garbage-bytes", b"\x00\xffnot an envelope at all")
    agent.send_raw("garbage-json", json.dumps({"device": DEVICE, "name": "config"}).encode())
    agent.send_raw("garbage-empty", b"")
    agent.send_raw("metrics-instead", encode_record(metrics))
    agent.send_raw("birth-instead", encode_record(birth))
    for name in ("garbage-bytes", "garbage-json", "garbage-empty"):
        reply = agent.inbox.wait_reply(None, name)
        assert reply["ok"] is False and reply["reason"] == "malformed", reply
        assert reply["error"]
    for name in ("metrics-instead", "birth-instead"):
        assert agent.inbox.wait_reply(None, name)["reason"] == "wrong_type"

    expected = {
        agent.send("selfdestruct"): "unknown_command",
        agent.send("rebirth"): "no_handler",  # a built-in the runtime did not register here
        agent.send("explode"): "handler_error",
        agent.send("strict"): "bad_args",
        agent.send("config", {"interval_s": "soon"}): "rejected",
        agent.send("config"): "bad_args",  # nothing to apply
        agent.send("assign", {"source": "rtsp://x"}): "bad_args",  # no camera
        agent.send("assign", {"camera": "a/b"}): "bad_args",
        agent.send("unassign", {"camera": "front", "extra": 1}): "bad_args",
        agent.send("config", {"interval_s": 1}, device="gw-2"): "wrong_device",
    }
    for command_id, reason in expected.items():
        reply = agent.inbox.wait_reply(command_id)
        assert (reply["ok"], reply["reason"]) == (False, reason), reply
    # A command whose record names another command than its topic.
    mismatched = Command(device=DEVICE, name="config", command_id="mismatch-1", time_ms=1,
                         args={"interval_s": 1}, reply_to=REPLIES)
    agent.send_raw("assign", encode_record(mismatched))
    assert agent.inbox.wait_reply("mismatch-1")["reason"] == "name_mismatch"

    errors = agent.dispatcher.stats().errors
    assert set(errors) == set(REASONS)
    assert errors["malformed"] == 3 and errors["wrong_type"] == 2
    assert errors["bad_args"] == 5 and errors["rejected"] == 1
    assert errors["unknown_command"] == errors["no_handler"] == errors["handler_error"] == 1
    assert errors["wrong_device"] == errors["name_mismatch"] == 1
    assert errors["internal"] == errors["queue_full"] == 0
    assert agent.ran("explode") == agent.ran("strict") == 1
    assert agent.ran("assign") == agent.ran("unassign") == 0
    assert {d.reason for d in agent.dispatcher.dead_letters()} >= {"malformed", "wrong_type"}

    # Still working.
    command_id = agent.send("config", {"interval_s": 2})
    assert agent.inbox.wait_reply(command_id)["ok"] is True


def test_a_full_queue_refuses_instead_of_blocking_the_network_thread(broker: RunningBroker) -> None:
    inbox = Inbox()
    coordinator = BusSession(config_for(broker))
    coordinator.subscribe(f"{REPLIES}/#", inbox)
    coordinator.start()
    session = start_device(broker)
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow(command: Command) -> str:
        ran.append(command.command_id)
        entered.set()
        assert release.wait(WAIT)
        return "done"

    dispatcher = CommandDispatcher(session, DEVICE, {"slow": slow}, queue_size=1).start()
    session.start()
    try:
        assert session.wait_connected(WAIT) and coordinator.wait_connected(WAIT)

        def send(command_id: str) -> None:
            command = Command(device=DEVICE, name="slow", command_id=command_id, time_ms=1,
                              reply_to=REPLIES)
            coordinator.publish(coordinator.topics.cmd(DEVICE, "slow"), encode_record(command))

        # The first command that reaches the handler holds the worker ...
        for i in range(30):
            send(f"first-{i}")
            if entered.wait(0.5):
                break
        assert entered.is_set()
        # ... so one more fits the queue and the next is refused at once.
        send("queued")
        send("refused")
        refused = inbox.wait_reply("refused")
        assert (refused["ok"], refused["reason"]) == (False, "queue_full")
        release.set()
        assert inbox.wait_reply("queued")["ok"] is True
        assert "refused" not in ran and "queued" in ran
        assert dispatcher.stats().errors["queue_full"] >= 1
    finally:
        release.set()
        dispatcher.stop()
        session.stop()
        coordinator.stop()


# -- Home Assistant --------------------------------------------------------------


def description(**overrides: Any) -> DeviceDescription:
    values: dict[str, Any] = {
        "device": DEVICE, "sw_version": "0.1.0", "model": "test rig",
        "metrics": (describe_metric("cpu_percent"), describe_metric("temp_soc_c")),
        "cameras": (CameraEntities("front", ("person", "car")),),
    }
    values.update(overrides)
    return DeviceDescription(**values)


def live(inbox: Inbox, topic: str) -> list[ReceivedMessage]:
    return [m for m in inbox.on(topic) if m.payload]


def test_home_assistant_discovery_on_connect_and_on_birth(broker: RunningBroker) -> None:
    discovery_topic = "homeassistant/device/gw-1/config"
    watcher_inbox = Inbox()
    watcher = BusSession(config_for(broker))
    watcher.subscribe("homeassistant/device/#", watcher_inbox)
    watcher.subscribe("edgebus/gw-1/state/#", watcher_inbox)
    watcher.start()
    assert watcher.wait_connected(WAIT)
    session = start_device(broker)
    ha = HomeAssistantPublisher(session, description()).start()
    session.start()
    try:
        assert session.wait_connected(WAIT)
        # On connect: the device document, as built by schemas.ha_discovery.
        assert watcher_inbox.wait_for(lambda _: bool(live(watcher_inbox, discovery_topic)))
        first = live(watcher_inbox, discovery_topic)[0]
        assert json.loads(first.payload) == device_discovery(description()).config

        assert ha.publish_metrics_state({"cpu_percent": 12.5})
        assert ha.publish_metrics_state({"temp_soc_c": 48.0})  # merged with the last values
        assert ha.publish_camera_state("front", {"person": 1})
        metrics_topic, front_topic = "edgebus/gw-1/state/metrics", "edgebus/gw-1/state/front_objects"
        assert watcher_inbox.wait_for(lambda _: len(watcher_inbox.on(metrics_topic)) >= 2
                                      and bool(watcher_inbox.on(front_topic)))
        assert json.loads(watcher_inbox.on(metrics_topic)[-1].payload) == \
            {"cpu_percent": 12.5, "temp_soc_c": 48.0}
        assert json.loads(watcher_inbox.on(front_topic)[-1].payload) == {"car": 0, "person": 1}

        # Home Assistant (re)starts: its birth makes the agent publish discovery and state again.
        seen_docs, seen_states = len(live(watcher_inbox, discovery_topic)), len(
            watcher_inbox.on(metrics_topic))
        # One birth, once the broker acknowledged the agent's subscription to it: a second,
        # late birth would re-publish discovery in the middle of the camera removal below.
        assert session.wait_subscribed(WAIT)
        with MqttProbe(broker, "home-assistant") as home_assistant:
            home_assistant.connected()
            home_assistant.publish("homeassistant/status", "online")
        assert watcher_inbox.wait_for(lambda _: len(live(watcher_inbox, discovery_topic)) > seen_docs)
        assert watcher_inbox.wait_for(lambda _: len(watcher_inbox.on(metrics_topic)) > seen_states)
        again = live(watcher_inbox, discovery_topic)[-1]
        assert json.loads(again.payload) == device_discovery(description()).config
        assert json.loads(watcher_inbox.on(metrics_topic)[-1].payload) == \
            {"cpu_percent": 12.5, "temp_soc_c": 48.0}
        assert ha.stats()["ha_births"] == 1

        # A camera goes away: its entities are removed, then the new document published.
        smaller = description(cameras=())
        seen_docs = len(live(watcher_inbox, discovery_topic))
        assert ha.update_description(smaller) == 2
        assert watcher_inbox.wait_for(lambda _: len(live(watcher_inbox, discovery_topic))
                                      >= seen_docs + 2)
        # A late second birth from a slow broker may add a whole document before or after
        # the pair; publications never interleave, so the removal still precedes the final one.
        docs = [json.loads(m.payload) for m in live(watcher_inbox, discovery_topic)[seen_docs:]]
        removals = [i for i, d in enumerate(docs)
                    if d["cmps"].get("front_occupancy") == {"p": "binary_sensor"}]
        assert len(removals) == 1 and docs[removals[0] + 1] == device_discovery(smaller).config
        assert docs[-1] == device_discovery(smaller).config
    finally:
        ha.stop()
        session.stop()
        watcher.stop()


def test_rebirth_command_republishes_birth_and_discovery(broker: RunningBroker) -> None:
    inbox = Inbox()
    watcher = BusSession(config_for(broker))
    watcher.subscribe("homeassistant/#", inbox)
    watcher.subscribe("edgebus/gw-1/birth", inbox)
    watcher.subscribe(f"{REPLIES}/#", inbox)
    watcher.start()
    assert watcher.wait_connected(WAIT)
    session = start_device(broker)
    ha = HomeAssistantPublisher(session, description(), mode="entity").start()
    birth = birth_payload(DEVICE, 1, agent_version="test")
    dispatcher = CommandDispatcher(
        session, DEVICE, {"rebirth": rebirth_handler(session, birth, ha.publish_discovery)}).start()
    session.start()
    try:
        assert session.wait_connected(WAIT)
        entity_docs = 2 + 2 + 1 + 1  # two metrics, two label counts, one occupancy, one stream
        assert inbox.wait_for(lambda msgs: sum(m.topic.startswith("homeassistant/") and bool(m.payload)
                                               for m in msgs) >= entity_docs)
        births = len(inbox.on("edgebus/gw-1/birth"))
        for i in range(30):
            command = Command(device=DEVICE, name="rebirth", command_id=f"rb-{i}", time_ms=1,
                              reply_to=REPLIES)
            watcher.publish(watcher.topics.cmd(DEVICE, "rebirth"), encode_record(command))
            if inbox.answered(f"rb-{i}", 0.5):
                break
        reply = inbox.replies(f"rb-{i}")[0]
        assert reply["ok"] is True and reply["result"] == {"birth": True, "also": [entity_docs]}
        assert inbox.wait_for(lambda _: len(inbox.on("edgebus/gw-1/birth")) > births)
        record = decode_record(inbox.on("edgebus/gw-1/birth")[-1].payload)
        assert isinstance(record, Birth) and record.device == DEVICE
        cpu_doc = "homeassistant/sensor/gw-1/cpu_percent/config"
        assert inbox.wait_for(lambda _: len(live(inbox, cpu_doc)) >= 2)
    finally:
        dispatcher.stop()
        ha.stop()
        session.stop()
        watcher.stop()


def test_publisher_refuses_a_description_of_another_device(broker: RunningBroker) -> None:
    session = start_device(broker)
    with pytest.raises(ConfigError):
        HomeAssistantPublisher(session, description(device="gw-2"))
    with pytest.raises(ConfigError):
        HomeAssistantPublisher(session, description(root="other"))
    with pytest.raises(ConfigError):
        HomeAssistantPublisher(session, description(), mode="both")  # type: ignore[arg-type]
    session.outbox.close()
