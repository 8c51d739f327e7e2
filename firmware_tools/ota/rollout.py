"""The rollout engine: offer an update, serve the chunks devices ask for, follow them to an outcome.

A :class:`~protocols.ota.rollout.Rollout` decides who is offered the update
when (a canary cohort first, a halt when too many fail, at most ``parallel`` at
once). Each device gets the signed manifest as an ``ota`` command with a
private ``reply_to``; its chunk requests on ``{root}/{device}/ota/want`` are
answered by a :class:`~protocols.ota.sender.ChunkServer` (frames on
``cmd/ota/chunk``) and its retained ``state/ota`` is followed. Per device the
outcome is committed, failed (rolled back, refused, failed), or timed out after
``timeout`` seconds without a word from it.

A device that drops off mid-download and comes back (``status`` goes
``online`` again) is offered the update once more; it resumes from the chunks
it holds, so only what it lacks is sent again. All bus traffic is handled on
one thread (the caller's): the session's network thread only queues it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from broker.router import ReceivedMessage
from broker.session import ENVELOPE_CONTENT_TYPE, BusSession
from firmware_tools.ota.report import PublishReport
from firmware_tools.ota.transfer import DeviceTransfer
from firmware_tools.ota.view import ProgressView
from firmware_tools.ota_artifact import Artifact
from protocols.ota.rollout import Outcome, Rollout, RolloutPolicy, outcome_of
from protocols.ota.sender import ChunkServer
from schemas.command import Command
from schemas.errors import CodecError, ConfigError, TopicError
from schemas.messages import encode_record
from schemas.ota import TERMINAL_PHASES, ChunkRequest, OtaProgress, Phase
from schemas.topics import TopicTree, validate_device_id

__all__ = ["FrameHook", "OtaPublisher"]

logger = logging.getLogger(__name__)

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
