"""A deterministic simulator for the protocols: virtual clock, faulty network, crashes, checkers.

    report = replay(1234)          # same seed, same run, every time
    assert report.ok, report.summary()
"""

from protocols.sim.checkers import check_all
from protocols.sim.cluster import SimConfig, Simulation
from protocols.sim.history import History
from protocols.sim.network import NetworkProfile
from protocols.sim.prng import SplitMix64
from protocols.sim.register import AppendRegister
from protocols.sim.run import RunReport, replay, run_seed
from protocols.sim.storage import DurableStore

__all__ = [
    "AppendRegister",
    "DurableStore",
    "History",
    "NetworkProfile",
    "RunReport",
    "SimConfig",
    "Simulation",
    "SplitMix64",
    "check_all",
    "replay",
    "run_seed",
]
