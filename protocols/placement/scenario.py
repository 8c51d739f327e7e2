"""A simulated fleet from a seed: agents of mixed capacity, camera streams, the config placement, load steps.

The mix stands for a real site: Raspberry Pi 4 and 5 boards, a few Jetson
Orin boxes with an accelerator (the only ones that can run the YOLO streams),
and x86 mini PCs. Some cameras can be reached only from the agents of their
site. The placement "from config" deals the streams round-robin over the
agents that can take them, the way agent.toml files get written: blind to
capacity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from protocols.placement.agent_view import AgentCapacity
from protocols.placement.assignment import Placement
from protocols.placement.workload import Workload
from protocols.sim.prng import SplitMix64

__all__ = ["PROFILES", "AgentProfile", "Fleet", "LoadStep", "SimAgent", "StepKind", "build_fleet",
           "config_placement", "describe_step", "standard_steps"]


@dataclass(frozen=True, slots=True)
class AgentProfile:
    name: str
    cores: float
    memory_mb: int
    accelerators: int
    detector_fps: Mapping[str, float]
    weight: int  # how common it is in the fleet


# Detector frames/s: on CPU about 25 frames/s per core (a stream's frame costs 0.02-0.06 core-seconds,
# so detection is most of its CPU); the Orin's accelerator runs YOLO and takes ssdlite off the CPU.
PROFILES = (
    AgentProfile("pi4", 4, 4096, 0, {"ssdlite": 100.0}, 4),
    AgentProfile("pi5", 4, 8192, 0, {"ssdlite": 100.0}, 3),
    AgentProfile("orin", 6, 8192, 1, {"ssdlite": 300.0, "yolov8n": 90.0}, 1),
    AgentProfile("nuc", 8, 16384, 0, {"ssdlite": 200.0, "yolov8n": 40.0}, 2),
)


class StepKind(StrEnum):
    DEMAND = "demand"  # streams' CPU demand becomes factor x their base (over ramp_ms)
    HOTSPOT = "hotspot"  # the streams these agents run at the time become factor x (over ramp_ms)
    HOTSPOT_END = "hotspot_end"  # the streams of the hotspot with the same label go back to 1x
    LEAVE = "leave"  # agents go offline (their will)
    RETURN = "return"  # agents come back
    DRAIN = "drain"  # the operator drains agents
    UNDRAIN = "undrain"
    CORDON = "cordon"
    UNCORDON = "uncordon"


@dataclass(frozen=True, slots=True)
class LoadStep:
    at_ms: int
    kind: StepKind
    ids: tuple[str, ...]
    factor: float = 1.0
    ramp_ms: int = 0
    label: str = ""


def describe_step(step: LoadStep) -> str:
    """A load step in a few words, for reports."""
    agents = ", ".join(step.ids)
    if step.kind is StepKind.HOTSPOT:
        ramp = f" over {step.ramp_ms // 1000} s" if step.ramp_ms else ""
        return f"{step.label}: cameras of {agents} to {step.factor:g}x CPU{ramp}"
    if step.kind is StepKind.HOTSPOT_END:
        return f"{step.label} ends"
    if step.kind is StepKind.DEMAND:
        return f"{len(step.ids)} streams to {step.factor:g}x CPU"
    return f"{step.kind.value} {agents}"


@dataclass(frozen=True, slots=True)
class SimAgent:
    id: str
    profile: str
    site: int
    capacity: AgentCapacity
    background_cpu: float  # the OS and the agent itself, share of the box
    background_memory: float


@dataclass(frozen=True, slots=True)
class Fleet:
    agents: tuple[SimAgent, ...]
    streams: tuple[Workload, ...]
    initial: Placement
    steps: tuple[LoadStep, ...]


def _uniform(rng: SplitMix64, lo: float, hi: float) -> float:
    return lo + (hi - lo) * (rng.next_u64() / 2**64)


def build_fleet(seed: int, agents: int = 50, streams: int = 200, sites: int = 5,
                duration_ms: int = 24 * 60_000, restricted: float = 0.15, yolo: float = 0.06) -> Fleet:
    """The fleet of ``seed``: ``agents`` boxes of mixed capacity, ``streams`` cameras, the standard steps."""
    rng = SplitMix64(seed)
    deck = [p for p in PROFILES for _ in range(p.weight)]
    orins = [p for p in PROFILES if p.accelerators]
    fleet: list[SimAgent] = []
    for i in range(agents):
        profile = orins[0] if i == 0 and orins else rng.choice(deck)  # someone can always run YOLO
        capacity = AgentCapacity(profile.cores, profile.memory_mb, profile.accelerators, profile.detector_fps,
                                 max_tx_per_s=50.0, reserved_memory_mb=profile.memory_mb // 8)
        fleet.append(SimAgent(f"gw-{i:02d}", profile.name, i % sites, capacity,
                              _uniform(rng, 0.02, 0.08), _uniform(rng, 0.10, 0.20)))
    site_agents = {s: frozenset(a.id for a in fleet if a.site == s) for s in range(sites)}
    accel = frozenset(a.id for a in fleet if a.capacity.accelerators)
    cams: list[Workload] = []
    for i in range(streams):
        fps = float(rng.between(5, 15))
        needs_yolo = rng.chance(yolo)
        reach = site_agents[rng.below(sites)] if rng.chance(restricted) else None
        if needs_yolo and reach is not None and not (reach & accel):
            reach = None  # a YOLO camera must be reachable from some accelerator
        cams.append(Workload(
            f"cam-{i:03d}", cpu_cores=round(fps * _uniform(rng, 0.02, 0.06), 3),
            memory_mb=rng.between(80, 250), fps=fps,
            backend="yolov8n" if needs_yolo else "ssdlite", needs_accelerator=needs_yolo,
            reachable_from=reach, priority=1 if rng.chance(0.1) else 0, tx_per_s=0.2))
    initial = config_placement(fleet, cams)
    return Fleet(tuple(fleet), tuple(cams), initial, standard_steps(rng.fork(), fleet, cams, duration_ms))


def config_placement(agents: Sequence[SimAgent], streams: Sequence[Workload]) -> Placement:
    """Round-robin over the agents that may run each stream and have its memory: blind to CPU."""
    free = {a.id: a.capacity.placeable_memory_mb for a in agents}
    owners: dict[str, str] = {}
    turn = 0
    for w in streams:
        for k in range(len(agents)):
            a = agents[(turn + k) % len(agents)]
            cap = a.capacity
            if ((w.reachable_from is None or a.id in w.reachable_from)
                    and (not w.needs_accelerator or cap.accelerators)
                    and (w.backend is None or w.backend in cap.detector_fps) and free[a.id] >= w.memory_mb):
                owners[w.id] = a.id
                free[a.id] -= w.memory_mb
                turn = (turn + k + 1) % len(agents)
                break
    return Placement.of(owners)


def standard_steps(rng: SplitMix64, agents: Sequence[SimAgent], streams: Sequence[Workload],
                   duration_ms: int) -> tuple[LoadStep, ...]:
    """The benchmark's day, scaled to ``duration_ms`` (24 minutes at 1.0).

    Balance from the config placement; then the cameras of three small
    agents see a crowd (3x their CPU at once); three agents leave and come
    back; the cameras of two other small agents build up to 3x over three
    minutes (the forecast sees it coming); the crowd leaves.
    """
    scale = duration_ms / (24 * 60_000)
    small = [a.id for a in agents[1:] if a.capacity.cores <= 4] or [a.id for a in agents]
    picked = rng.shuffled(small)
    crowd = tuple(sorted(picked[:3]))
    evening = tuple(sorted(picked[3:5]))
    others = [a.id for a in agents[1:] if a.id not in crowd + evening]
    leaving = tuple(sorted(rng.shuffled(others)[: min(3, max(1, len(agents) // 4))]))

    def at(minutes: float) -> int:  # 3 s past the minute: between two reports, as real load steps fall
        return int(minutes * 60_000 * scale) // 1000 * 1000 + 3000

    return (
        LoadStep(at(6), StepKind.HOTSPOT, crowd, 3.0, 0, "crowd"),
        LoadStep(at(10), StepKind.LEAVE, leaving, label="leave"),
        LoadStep(at(13), StepKind.RETURN, leaving, label="return"),
        LoadStep(at(16), StepKind.HOTSPOT, evening, 3.0, at(3) - 3000, "evening"),
        LoadStep(at(20), StepKind.HOTSPOT_END, (), label="crowd"),
    )
