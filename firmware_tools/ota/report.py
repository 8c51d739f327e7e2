"""The end of a rollout: one line per device and the exit code's basis."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["PublishReport", "print_report"]


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


def print_report(report: PublishReport, out: TextIO = sys.stdout) -> None:
    for line in report.lines():
        print(line, file=out)
