"""Measure what the 3-node NATS cluster does and does not do for edgebus; prints one line per finding.

Run by hand (README "Which broker cluster was tested" quotes its output):
``python -m tests.cluster_broker_findings``. Plain paho clients, MQTT 3.1.1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from broker.session import BusConfig, BusSession
from tests.cluster_broker import NatsCluster, NatsNode, find_nats_server, running_cluster

WAIT = 15.0


class Client:
    """A paho client that records what it receives and its SUBACK codes."""

    def __init__(self, node: NatsNode, cid: str, *, clean: bool = True, mqtt5: bool = False,
                 will: str | None = None) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.subacks: list[str] = []
        self.connack: str | None = None
        self.cond = threading.Condition()
        proto = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto,
                             clean_session=None if mqtt5 else clean)
        if will:
            self.c.will_set(will, b"offline", qos=1, retain=True)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.connect("127.0.0.1", node.mqtt_port, keepalive=5)
        self.c.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        with self.cond:
            self.connack = str(rc)
            self.cond.notify_all()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def _on_subscribe(self, _c: object, _u: object, _m: object, codes: list[ReasonCode], _p: object) -> None:
        with self.cond:
            self.subacks.extend(str(c) for c in codes)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def subscribe(self, topic: str, qos: int = 1) -> str:
        n = len(self.subacks)
        self.wait(lambda: self.connack is not None)
        self.c.subscribe(topic, qos)
        self.wait(lambda: len(self.subacks) > n)
        return self.subacks[n] if len(self.subacks) > n else "no SUBACK"

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def findings(cluster: NatsCluster) -> None:
    n1, n2, n3 = cluster.nodes

    five = Client(n1, "v5", mqtt5=True)
    five.wait(lambda: five.connack is not None, 5)
    print(f"MQTT 5 connect: {five.connack}")
    five.close()
    auto = BusSession(BusConfig(port=n1.mqtt_port, client_id="auto-probe", clean_start=True))
    auto.start()
    print(f"edgebus session, protocol auto: connected {auto.wait_connected(WAIT)}, "
          f"speaks {auto.stats().protocol}")
    auto.stop(flush_timeout=0)

    a, b = Client(n1, "share-a"), Client(n2, "share-b")
    print(f"$share subscribe: {a.subscribe('$share/g/t/share')}, {b.subscribe('$share/g/t/share')}")
    pub = Client(n3, "share-pub")
    pub.wait(lambda: pub.connack is not None)
    for i in range(10):
        pub.c.publish("t/share", str(i).encode(), qos=1)
    time.sleep(2)  # a fixed window to count what arrives (a measurement, not a synchronisation)
    print(f"$share: 10 published, members got {len(a.got)} and {len(b.got)}")
    q2 = Client(n2, "qos2")
    print(f"QoS 2 subscribe: {q2.subscribe('t/q2', qos=2)}")
    for c in (a, b, pub, q2):
        c.close()

    # A persistent (QoS 1) session made on n1; n1 dies; messages published meanwhile; resume on n3.
    sess = Client(n1, "persistent", clean=False)
    print(f"persistent session subscribe on n1: {sess.subscribe('t/queued')}")
    sess.close()
    # A device with a will, connected to n1; a watcher on n2.
    dev = Client(n1, "dev", will="t/dev/status")
    dev.wait(lambda: dev.connack is not None)
    dev.c.publish("t/dev/status", b"online", qos=1, retain=True).wait_for_publish(5)
    watch = Client(n2, "watch")
    watch.subscribe("t/dev/status")
    watch.wait(lambda: any(p == b"online" for _, p, _ in watch.got))
    early = Client(n3, "early")
    code = early.subscribe("t/dev/status")
    early.wait(lambda: bool(early.got), 5)
    print(f"retained status read on n3 while n1 lives ({code}): {[p for _, p, r in early.got if r]}")
    early.close()
    cluster.kill(n1)
    dead = time.monotonic()
    went_offline = watch.wait(lambda: any(p == b"offline" for _, p, _ in watch.got), 20)
    seen = f"offline seen on n2 after {time.monotonic() - dead:.1f} s" if went_offline \
        else "never published (20 s)"
    print(f"will of a client whose node was killed -9: {seen}")
    dev.c.loop_stop()
    cluster.wait_subscribable(n2)
    p2 = Client(n2, "pub2")
    p2.wait(lambda: p2.connack is not None)
    for i in range(5):
        p2.c.publish("t/queued", str(i).encode(), qos=1).wait_for_publish(5)
    back = Client(n3, "persistent", clean=False)
    back.wait(lambda: len(back.got) >= 5, 20)
    print(f"persistent session resumed on n3 after its node died: {len(back.got)} of 5 queued messages")
    late = Client(n3, "late")
    code = late.subscribe("t/dev/status")
    late.wait(lambda: bool(late.got), 5)
    print(f"retained status read on n3 after n1 died ({code}): {[p for _, p, r in late.got if r]}")
    for c in (watch, p2, back, late):
        c.close()


def main() -> int:
    binary = find_nats_server()
    if binary is None:
        print("no nats-server")
        return 1
    with running_cluster(binary) as cluster:
        findings(cluster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
