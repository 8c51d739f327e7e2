"""Reading the agent's :class:`~agents.shedding.Pressure`: its own CPU share, memory, outbox fill.

Camera frame queues are deliberately not a reading: they keep the newest
frames and are full whenever detection is slower than capture, which is a
camera's normal state at full tilt, so they would make a busy camera shed itself.
"""

from __future__ import annotations

from typing import Protocol

import psutil

from agents.shedding import Pressure
from broker.outbox import Outbox

__all__ = ["PressureGauge", "ProcessCpuShare"]


class _CpuPercent(Protocol):
    def cpu_percent(self, interval: float | None = None) -> float: ...


def _usable_cpus(process: psutil.Process) -> int:
    """CPUs the process may run on (its affinity mask), else all of them."""
    try:
        return len(process.cpu_affinity() or []) or psutil.cpu_count() or 1
    except (AttributeError, psutil.Error, OSError):  # no cpu_affinity on macOS
        return psutil.cpu_count() or 1


class ProcessCpuShare:
    """This process's share (0..1) of the CPUs it may use since the last reading, all threads."""

    def __init__(self, process: _CpuPercent | None = None, cpus: int | None = None) -> None:
        own = psutil.Process()
        self._process: _CpuPercent = process or own
        self._cpus = cpus or _usable_cpus(own)
        self._process.cpu_percent()  # primes the counter; the first real reading is since now

    def read(self) -> float:
        # psutil's process percent is relative to one CPU (200 = two cores busy).
        return min(1.0, max(0.0, self._process.cpu_percent() / 100 / self._cpus))


class PressureGauge:
    """One :class:`Pressure` reading per call, for the agent's shedding job."""

    def __init__(self, outbox: Outbox, cpu: ProcessCpuShare | None = None) -> None:
        self._outbox = outbox
        self._cpu = cpu or ProcessCpuShare()

    def read(self) -> Pressure:
        outbox = self._outbox
        fill = max(len(outbox) / outbox.max_messages, outbox.size_bytes / outbox.max_bytes)
        return Pressure(process_cpu=self._cpu.read(), memory=psutil.virtual_memory().percent / 100,
                        outbox=fill)
