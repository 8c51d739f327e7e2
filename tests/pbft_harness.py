"""A tiny synchronous network for scripted PBFT tests: frames queue up and are pumped in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from protocols.pbft import Client, DecisionLog, PbftConfig, Replica
from protocols.pbft.client import Accepted
from protocols.pbft.output import Event
from protocols.pbft.signing import SimKeys, Verifier

Filter = Callable[[str, str, bytes], bool]  # (src, dst, frame) -> deliver?


class Harness:
    def __init__(
        self, n: int = 4, clients: int = 2, verifier: Verifier | None = None, keys: SimKeys | None = None,
        **cfg: int,
    ) -> None:
        self.ids = tuple(f"r{i}" for i in range(n))
        self.client_ids = tuple(f"c{i}" for i in range(clients))
        self.keys = keys or SimKeys([*self.ids, *self.client_ids], seed=1)
        self.verifier = verifier or self.keys
        self.cfg = PbftConfig(self.ids, **cfg)
        self.replicas: dict[str, Replica] = {
            r: Replica(self.cfg, DecisionLog(), self.keys.signer(r), self.verifier) for r in self.ids
        }
        self.clients = {c: Client(self.cfg, self.keys.signer(c), self.verifier) for c in self.client_ids}
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.events: dict[str, list[Event]] = {r: [] for r in self.ids}
        self.accepted: dict[str, list[Accepted]] = {c: [] for c in self.client_ids}
        self.down: set[str] = set()

    def flush(self, r: str) -> None:
        out = self.replicas[r].drain()
        self.events[r].extend(out.events)
        for s in out.sends:
            for dst in ([d for d in self.ids if d != r] if s.dst is None else [s.dst]):
                self.queue.append((r, dst, s.frame))

    def send(self, src: str, dst: str, frame: bytes) -> None:
        self.queue.append((src, dst, frame))

    def submit(self, client: str, op: bytes) -> bytes:
        frame = self.clients[client].submit(op)
        for r in self.ids:
            self.send(client, r, frame)
        return frame

    def pump(self, deliver: Filter | None = None, limit: int = 50_000) -> None:
        for r in self.ids:
            self.flush(r)
        steps = 0
        while self.queue and steps < limit:
            steps += 1
            src, dst, frame = self.queue.popleft()
            if dst in self.down or (deliver is not None and not deliver(src, dst, frame)):
                continue
            if dst in self.clients:
                acc = self.clients[dst].receive(frame)
                if acc is not None:
                    self.accepted[dst].append(acc)
                continue
            self.replicas[dst].receive(frame)
            self.flush(dst)
        assert steps < limit, "the scripted network did not go quiet"

    def tick(self, times: int = 1, deliver: Filter | None = None) -> None:
        for _ in range(times):
            for r in self.ids:
                if r not in self.down:
                    self.replicas[r].tick()
            for c, cl in self.clients.items():
                frame = cl.tick()
                if frame is not None:
                    for r in self.ids:
                        self.send(c, r, frame)
            self.pump(deliver)
