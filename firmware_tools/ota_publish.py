"""``edge-flash ota publish``: push a signed update to devices over MQTT, in stages.

The server does not push the artifact: each device pulls it. The server

1. finds the devices: retained births on ``{root}/+/birth`` whose ``groups``
   hold GROUP (``all``: every device) and whose capabilities include ``ota``,
   or an explicit ``--devices`` list;
2. runs a :class:`~protocols.ota.rollout.Rollout` over them: a canary cohort
   first, a halt when too many fail, then the rest, at most ``parallel`` at
   once;
3. offers the update to each device as an ``ota`` command (the signed
   manifest, a private ``reply_to``), answers the device's chunk requests on
   ``{root}/{device}/ota/want`` with a :class:`~protocols.ota.sender.ChunkServer`
   (frames on ``cmd/ota/chunk``), and follows its retained ``state/ota``;
4. decides per device: committed, failed (rolled back, refused, failed), or
   timed out after ``timeout`` seconds without a word from it.

A device that drops off mid-download and comes back (``status`` goes
``online`` again) is offered the update once more; it resumes from the chunks
it holds, so only what it lacks is sent again. All bus traffic is handled on
one thread (the caller's): the session's network thread only queues it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from broker.router import ReceivedMessage
from broker.session import ENVELOPE_CONTENT_TYPE, BusConfig, BusSession
from firmware_tools.agent_config import SYSTEM_CA, BrokerTarget
from firmware_tools.ota_artifact import Artifact, build_artifact
from protocols.ota.rollout import Outcome, Rollout, RolloutPolicy, outcome_of
from protocols.ota.sender import ChunkServer
from schemas.birth import Birth
from schemas.command import Command
from schemas.errors import CodecError, ConfigError, NotConnected, TopicError
from schemas.messages import decode_record, encode_record
from schemas.ota import DEFAULT_CHUNK_SIZE, TERMINAL_PHASES, ChunkRequest, OtaProgress, Phase
from schemas.topics import TopicTree, validate_device_id

__all__ = ["OTA_CAPABILITY", "DeviceTransfer", "FrameHook", "OtaPublisher", "ProgressView", "PublishReport",
           "PublishRequest",
           "discover_devices", "parse_fraction", "print_report", "publish", "publisher_session"]

logger = logging.getLogger(__name__)

OTA_CAPABILITY = "ota"
ALL_DEVICES = "all"
#: Re-offers to one device (after it came back online mid-download) before it is left to time out.
MAX_OFFERS = 5
#: How often the main loop wakes up with nothing to do (timeouts, the progress view).
TICK = 0.2
#: Messages handled in a row before timeouts and the progress view get a turn.
BURST = 500
#: Phases in which a device is still pulling chunks, so a re-offer after a reconnect is safe.
_DOWNLOAD_PHASES = frozenset({"waiting", Phase.OFFERED.value, Phase.DOWNLOADING.value})

#: A test hook: ``(device, index, frame) -> frame`` just before a chunk frame is published.
FrameHook = Callable[[str, int, bytes], bytes]


def parse_fraction(text: str, what: str, *, zero_ok: bool) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1; ConfigError outside (0, 1] (or [0, 1] when ``zero_ok``)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{what} must be a percentage (10%) or a fraction (0.1), not {text!r}") from None
    low_ok = value >= 0 if zero_ok else value > 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        raise ConfigError(f"{what} must be {'between 0%' if zero_ok else 'more than 0%'} and 100%, "
                          f"not {text!r}")
    return value


def publisher_session(broker: BrokerTarget, *, root: str = "edgebus", client_id: str | None = None,
                      tls_ca: Path | None = None) -> BusSession:
    """A clean, in-memory session with a unique client id (two publishers never kick each other off)."""
    cid = client_id or f"edge-flash-ota-{uuid.uuid4().hex[:12]}"
    ca = tls_ca if tls_ca is not None else (Path(SYSTEM_CA) if broker.tls else None)
    config = BusConfig(host=broker.host, port=broker.port, username=broker.username,
                       password=broker.password, client_id=cid, root=root, clean_start=True,
                       tls_ca=ca, reconnect_max_delay=5.0)
    return BusSession(config)


def _groups_of(birth: Birth) -> tuple[str, ...]:
    groups = getattr(birth, "groups", None)
    if groups is None:  # an older schemas without the field keeps unknown wire keys in extra
        groups = birth.extra.get("groups", ())
    return tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, Sequence) else ()


def discover_devices(session: BusSession, group: str, *, settle: float = 3.0,
                     quiet: float = 0.5) -> tuple[list[str], dict[str, str]]:
    """Devices whose retained birth puts them in ``group`` (or ``all``) and lists ``ota``.

    Returns ``(devices, skipped)``; ``skipped`` maps members left out to why: no
    ``ota`` capability, or ``offline`` (retained status), since an offline canary
    would only hold the rollout up until its timeout. Waits until no birth
    arrived for ``quiet`` seconds, at most ``settle``.
    """
    births: dict[str, Birth] = {}
    offline: set[str] = set()
    lock = threading.Lock()
    last = [time.monotonic()]

    def on_status(msg: ReceivedMessage) -> None:
        device = msg.topic[len(session.topics.root) + 1:].split("/", 1)[0]
        with lock:
            if msg.payload == b"offline":
                offline.add(device)
            else:
                offline.discard(device)

    def on_birth(msg: ReceivedMessage) -> None:
        try:
            record = decode_record(msg.payload)
        except (CodecError, TopicError) as exc:
            logger.warning("ignoring an undecodable birth on %s: %s", msg.topic, exc)
            return
        if isinstance(record, Birth):
            with lock:
                births[record.device] = record
                last[0] = time.monotonic()

    routes = [session.subscribe(session.topics.all_status(), on_status),
              session.subscribe(session.topics.all_births(), on_birth)]
    try:
        if not session.wait_connected(session.config.connect_timeout + 5):
            raise NotConnected(f"cannot reach the broker at {session.config.host}:{session.config.port}: "
                              f"{session.stats().last_error or 'no answer'}")
        start = time.monotonic()
        with lock:
            last[0] = start
        while time.monotonic() - start < settle:
            with lock:
                idle = time.monotonic() - last[0]
            if births and idle >= quiet:
                break
            time.sleep(0.05)
    finally:
        for route in routes:
            session.unsubscribe(route)
    with lock:
        found = dict(births)
        gone = set(offline)
    members = sorted(d for d, b in found.items() if group == ALL_DEVICES or group in _groups_of(b))
    skipped = {d: "no ota capability" for d in members if OTA_CAPABILITY not in found[d].capabilities}
    skipped.update({d: "offline" for d in members if d in gone and d not in skipped})
    devices = [d for d in members if d not in skipped]
    logger.info("discovery: %d births, %d in group %s, %d to update, %d skipped",
                len(found), len(members), group, len(devices), len(skipped))
    return devices, skipped


@dataclass(slots=True)
class DeviceTransfer:
    """What the server knows about one device's update."""

    device: str
    server: ChunkServer
    total: int
    phase: str = "waiting"
    received: int = 0
    reason: str | None = None
    detail: str | None = None
    slot: str | None = None
    outcome: Outcome | None = None
    offers: int = 0
    last_heard: float = 0.0
    online: bool | None = None


@dataclass(frozen=True, slots=True)
class PublishReport:
    """The end of a rollout: one line per device and the exit code's basis."""

    update_id: str
    version: str
    artifact_size: int
    chunk_count: int
    targeted: tuple[str, ...]
    outcomes: Mapping[str, str]  # device -> committed / failed / timed_out / not_offered
    reasons: Mapping[str, str]
    bytes_sent: Mapping[str, int]  # chunk frame bytes per device (ChunkServer.bytes_sent)
    resent_chunks: Mapping[str, int]
    halted_reason: str | None = None
    interrupted: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Exit 0 only when every targeted device committed."""
        return bool(self.targeted) and all(self.outcomes.get(d) == "committed" for d in self.targeted)

    def lines(self) -> list[str]:
        mib = self.artifact_size / 2**20
        out = [f"update {self.update_id} (version {self.version}, {mib:.2f} MiB, {self.chunk_count} chunks)"]
        width = max((len(d) for d in self.targeted), default=0)
        for device in self.targeted:
            outcome = self.outcomes.get(device, "not_offered")
            text = f"  {device:<{width}}  {outcome:<11}"
            if device in self.bytes_sent:
                sent = self.bytes_sent[device]
                ratio = sent / self.artifact_size if self.artifact_size else 0.0
                text += (f"  sent {sent / 2**20:.2f} MiB ({ratio:.2f}x the artifact), "
                         f"re-sent {self.resent_chunks.get(device, 0)} chunks")
            if self.reasons.get(device):
                text += f"  [{self.reasons[device]}]"
            out.append(text)
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items())
        out.append(f"summary: {counts}")
        if self.halted_reason:
            out.append(f"rollout HALTED: {self.halted_reason}")
        if self.interrupted:
            out.append("rollout INTERRUPTED: devices already offered may still finish on their own")
        return out


class ProgressView:
    """One line per device, redrawn in place on a terminal; log lines on phase changes otherwise."""

    def __init__(self, out: TextIO | None, interval: float = 0.5, log_interval: float = 10.0) -> None:
        self.out = out
        self.tty = bool(out is not None and out.isatty())
        self.interval = interval
        self.log_interval = log_interval
        self._drawn = 0
        self._last_draw = -math.inf
        self._last_log: dict[str, tuple[str, float]] = {}

    def update(self, transfers: Iterable[DeviceTransfer], now: float, force: bool = False) -> None:
        items = list(transfers)
        if self.tty and self.out is not None:
            if not force and now - self._last_draw < self.interval:
                return
            self._last_draw = now
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            for t in items:
                pct = 100 * t.received / t.total if t.total else 0.0
                reason = f"  {t.reason}" if t.reason else ""
                self.out.write(f"\x1b[K{t.device}: {t.phase:<11} {t.received}/{t.total} chunks "
                               f"({pct:5.1f}%){reason}\n")
            self.out.flush()
            self._drawn = len(items)
            return
        for t in items:
            phase, at = self._last_log.get(t.device, ("", -math.inf))
            if t.phase != phase or (t.phase == "downloading" and now - at >= self.log_interval):
                self._last_log[t.device] = (t.phase, now)
                logger.info("ota %s: phase=%s received=%d/%d%s", t.device, t.phase, t.received, t.total,
                            f" reason={t.reason}" if t.reason else "")


class OtaPublisher:
    """Runs one rollout of ``artifact`` over a started-or-not :class:`BusSession`.

    ``timeout``: seconds without a word from an offered device before it counts
    as timed out. ``frame_hook`` lets tests damage chunk frames in flight.
    """

    def __init__(self, session: BusSession, artifact: Artifact, policy: RolloutPolicy, *,
                 timeout: float = 900.0, rollout_id: str | None = None, out: TextIO | None = None,
                 frame_hook: FrameHook | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout <= 0:
            raise ConfigError(f"--timeout must be positive, not {timeout}")
        self.session = session
        self.artifact = artifact
        self.manifest = artifact.manifest
        self.policy = policy
        self.timeout = timeout
        self.rollout_id = rollout_id or f"rollout-{uuid.uuid4().hex[:12]}"
        self.frame_hook = frame_hook
        self._clock = clock
        self._view = ProgressView(out)
        self._topics: TopicTree = session.topics
        self._events: queue.Queue[ReceivedMessage] = queue.Queue()
        self._transfers: dict[str, DeviceTransfer] = {}
        self._rollout: Rollout | None = None
        self._commands: dict[str, str] = {}  # command id -> device
        self.reply_topic = self._topics.sys("ota", self.rollout_id, "reply")
        self._routes = [session.subscribe(f, self._events.put) for f in (
            f"{self._topics.root}/+/ota/want", f"{self._topics.root}/+/state/ota",
            f"{self._topics.root}/+/status", self.reply_topic)]

    # -- running ---------------------------------------------------------

    def transfer(self, device: str) -> DeviceTransfer:
        return self._transfers[device]

    def run(self, devices: Sequence[str], *, stop: threading.Event | None = None) -> PublishReport:
        """Offer, serve and follow until every offered device is decided (or ``stop`` is set)."""
        targeted = tuple(dict.fromkeys(devices))
        if not targeted:
            raise ConfigError("no devices to update")
        for device in targeted:
            validate_device_id(device)
            server = ChunkServer(self.manifest, self.artifact.read_chunk)
            self._transfers[device] = DeviceTransfer(device, server, total=self.manifest.chunk_count)
        rollout = self._rollout = Rollout(list(targeted), self.policy)
        interrupted = False
        try:
            if not self.session.wait_connected(self.session.config.connect_timeout + 5):
                logger.warning("not connected to the broker yet; offers wait in the outbox")
            for device in rollout.start():
                self._offer(device)
            while rollout.pending:  # each pending device ends: an outcome, or its timeout
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
                with contextlib.suppress(queue.Empty):
                    self._handle(self._events.get(timeout=TICK))
                    for _ in range(BURST):  # a burst, then the clock gets a look
                        self._handle(self._events.get_nowait())
                self._check_timeouts()
                self._view.update(self._offered(), self._clock())
        except KeyboardInterrupt:
            interrupted = True
        self._view.update(self._offered(), self._clock(), force=True)
        return self._report(targeted, interrupted)

    def close(self) -> None:
        for route in self._routes:
            self.session.unsubscribe(route)

    def _offered(self) -> list[DeviceTransfer]:
        return [t for t in self._transfers.values() if t.offers]

    def _offer(self, device: str) -> None:
        t = self._transfers[device]
        t.offers += 1
        t.last_heard = self._clock()
        if t.offers == 1:
            t.phase = "offered"
        command_id = f"{self.rollout_id}-{device}-{t.offers}"
        self._commands[command_id] = device
        command = Command(device=device, name="ota", command_id=command_id, time_ms=int(time.time() * 1000),
                          args=self.artifact.signed.to_offer(rollout=self.rollout_id),
                          reply_to=self.reply_topic)
        logger.info("offering update %s to %s (offer %d)", self.manifest.update_id, device, t.offers)
        if not self.session.publish(self._topics.cmd(device, "ota"), encode_record(command), qos=1,
                                    content_type=ENVELOPE_CONTENT_TYPE):
            logger.error("the session's outbox refused the offer to %s", device)

    def _decide(self, t: DeviceTransfer, outcome: Outcome, reason: str | None = None) -> None:
        if t.outcome is not None or self._rollout is None or t.device not in self._rollout.pending:
            return
        t.outcome = outcome
        if reason:
            t.reason = t.reason or reason
        level = logging.INFO if outcome is Outcome.COMMITTED else logging.WARNING
        logger.log(level, "device %s: %s%s", t.device, outcome.value, f" ({t.reason})" if t.reason else "")
        for device in self._rollout.on_outcome(t.device, outcome):
            self._offer(device)
        if self._rollout.halted_reason:
            logger.warning("rollout halted: %s", self._rollout.halted_reason)

    def _check_timeouts(self) -> None:
        now = self._clock()
        for t in self._transfers.values():
            # A new agent on trial may say nothing for its whole health window.
            limit = self.timeout + (self.manifest.health_window_s if t.phase == Phase.TRIAL.value else 0)
            if t.offers and t.outcome is None and now - t.last_heard > limit:
                t.phase = "timed_out"
                self._decide(t, Outcome.TIMED_OUT, f"no word for {self.timeout:g} s")

    # -- incoming ----------------------------------------------------------

    def _handle(self, msg: ReceivedMessage) -> None:
        if msg.topic == self.reply_topic:
            self._on_reply(msg.payload)
            return
        try:
            parsed = self._topics.parse(msg.topic)
        except TopicError:
            return
        t = self._transfers.get(parsed.device or "")
        if t is None or not t.offers:
            return
        suffix = msg.topic[len(self._topics.root) + len(t.device) + 2:]
        try:
            if suffix == "ota/want":
                self._on_want(t, ChunkRequest.from_json_bytes(msg.payload))
            elif suffix == "state/ota":
                self._on_progress(t, OtaProgress.from_json_bytes(msg.payload))
            elif suffix == "status":
                self._on_status(t, msg.payload)
        except CodecError as exc:
            logger.warning("ignoring a malformed message on %s: %s", msg.topic, exc)

    def _on_want(self, t: DeviceTransfer, request: ChunkRequest) -> None:
        if request.update_id != self.manifest.update_id or t.outcome is not None:
            return
        t.last_heard = self._clock()
        if t.phase in ("waiting", "offered"):
            t.phase = Phase.DOWNLOADING.value
        topic = self._topics.cmd(t.device, "ota/chunk")
        for index, frame in t.server.on_request(request):
            if self.frame_hook is not None:
                frame = self.frame_hook(t.device, index, frame)
            if not self.session.publish(topic, frame, qos=1):
                logger.warning("outbox full: chunk %d for %s not sent (the device will ask again)",
                               index, t.device)

    def _on_progress(self, t: DeviceTransfer, progress: OtaProgress) -> None:
        if progress.update_id != self.manifest.update_id:
            return  # a retained report of an earlier update
        t.last_heard = self._clock()
        t.phase = progress.phase.value
        t.received, t.total = progress.received, progress.total or t.total
        t.slot = progress.slot or t.slot
        if progress.reason:
            t.reason = progress.reason
        t.detail = progress.detail or t.detail
        outcome = outcome_of(progress.phase)
        if outcome is not None:
            failed = outcome is not Outcome.COMMITTED
            self._decide(t, outcome, (progress.reason or progress.phase.value) if failed else None)

    def _on_status(self, t: DeviceTransfer, payload: bytes) -> None:
        online = payload == b"online"
        was, t.online = t.online, online
        if online:
            t.last_heard = self._clock()
        if (online and was is False and t.outcome is None and t.phase in _DOWNLOAD_PHASES
                and t.offers < MAX_OFFERS):
            logger.info("%s is back online mid-download: offering again (it resumes)", t.device)
            self._offer(t.device)

    def _on_reply(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            logger.warning("ignoring a reply that is not JSON: %r", payload[:100])
            return
        if not isinstance(doc, dict):
            return
        device = self._commands.get(str(doc.get("id")))
        t = self._transfers.get(device or "")
        if t is None:
            return
        t.last_heard = self._clock()
        if not doc.get("ok"):
            reason = str(doc.get("reason") or "refused")
            t.detail = str(doc.get("error") or "")[:500] or t.detail
            result = doc.get("result")
            if isinstance(result, Mapping) and isinstance(result.get("reason"), str):
                reason = result["reason"]
            if t.phase in _DOWNLOAD_PHASES:
                t.phase = Phase.REFUSED.value
            logger.warning("%s refused the offer: %s %s", t.device, reason, t.detail or "")
            self._decide(t, Outcome.FAILED, reason)
            return
        result = doc.get("result")
        if isinstance(result, Mapping) and result.get("update_id") == self.manifest.update_id:
            phase = result.get("phase")
            if phase in {p.value for p in TERMINAL_PHASES}:  # already decided on an earlier offer
                t.phase = str(phase)
                if phase == Phase.COMMITTED.value:
                    self._decide(t, Outcome.COMMITTED)
                else:
                    self._decide(t, Outcome.FAILED, str(result.get("reason") or phase))

    # -- the end -------------------------------------------------------------

    def _report(self, targeted: tuple[str, ...], interrupted: bool) -> PublishReport:
        outcomes: dict[str, str] = {}
        for device in targeted:
            t = self._transfers[device]
            if not t.offers:
                outcomes[device] = "not_offered"
            elif t.outcome is None:
                outcomes[device] = "undecided"
            else:
                outcomes[device] = {Outcome.COMMITTED: "committed", Outcome.FAILED: "failed",
                                    Outcome.TIMED_OUT: "timed_out"}[t.outcome]
        counts = {k: sum(1 for v in outcomes.values() if v == k)
                  for k in ("committed", "failed", "timed_out", "not_offered", "undecided")}
        offered = [d for d in targeted if self._transfers[d].offers]
        rollout = self._rollout
        return PublishReport(
            update_id=self.manifest.update_id, version=self.manifest.version,
            artifact_size=self.manifest.size, chunk_count=self.manifest.chunk_count, targeted=targeted,
            outcomes=outcomes,
            reasons={d: self._transfers[d].reason or "" for d in targeted if self._transfers[d].reason},
            bytes_sent={d: self._transfers[d].server.bytes_sent for d in offered},
            resent_chunks={d: self._transfers[d].server.resent for d in offered},
            halted_reason=rollout.halted_reason if rollout is not None else None,
            interrupted=interrupted, counts={k: v for k, v in counts.items() if v or k != "undecided"})


def print_report(report: PublishReport, out: TextIO = sys.stdout) -> None:
    for line in report.lines():
        print(line, file=out)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishRequest:
    """Everything ``edge-flash ota publish`` was asked to do."""

    artifact: Path
    kind: str
    version: str
    keys_dir: Path
    broker: BrokerTarget
    group: str | None = None
    devices: tuple[str, ...] = ()
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    timeout: float = 900.0
    health_window: float = 60.0
    root: str = "edgebus"
    settle: float = 3.0
    tls_ca: Path | None = None
    client_id: str | None = None


def _requires(kind: str) -> dict[str, Any]:
    # A model is only useful to a device that runs cameras (the agent checks this too).
    return {"capabilities": ["cameras"]} if kind == "model" else {}


def publish(req: PublishRequest, *, out: TextIO | None = None, frame_hook: FrameHook | None = None,
            stop: threading.Event | None = None) -> tuple[int, PublishReport | None]:
    """Sign, discover, roll out, print the summary; ``(exit code, report)``.

    Exit 0 only when every targeted device committed, 1 otherwise; configuration
    errors (no devices found, a bad artifact) raise ConfigError (exit 2).
    """
    out = out if out is not None else sys.stdout
    if (req.group is None) == (not req.devices):
        raise ConfigError("give exactly one of --to GROUP or --devices a,b")
    for device in req.devices:
        try:
            validate_device_id(device)
        except TopicError as exc:
            raise ConfigError(f"--devices: {exc}") from None
    artifact = build_artifact(req.artifact, kind=req.kind, version=req.version, keys_dir=req.keys_dir,
                              chunk_size=req.chunk_size, health_window_s=req.health_window,
                              requires=_requires(req.kind))
    session = publisher_session(req.broker, root=req.root, client_id=req.client_id, tls_ca=req.tls_ca)
    session.start()
    try:
        if req.group is not None:
            devices, skipped = discover_devices(session, req.group, settle=req.settle)
            for device, why in skipped.items():
                print(f"skipping {device}: {why}", file=out)
            if not devices:
                raise ConfigError(f"no device in group {req.group!r} announces the ota capability "
                                  f"(retained births under {req.root}/+/birth)")
        else:
            devices = list(req.devices)
        print(f"rolling out {artifact.manifest.update_id} to {len(devices)} device(s): {', '.join(devices)}",
              file=out)
        publisher = OtaPublisher(session, artifact, req.policy, timeout=req.timeout, out=out,
                                 frame_hook=frame_hook)
        try:
            report = publisher.run(devices, stop=stop)
        finally:
            publisher.close()
    finally:
        session.stop(flush_timeout=2.0)
    print_report(report, out)
    return (0 if report.ok else 1), report
