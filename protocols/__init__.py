"""Coordination protocols as sans-I/O state machines. Pure; no I/O, no clock."""
