"""The camera pipeline an agent runs per camera: capture, motion gating, detection,
tracking, and publishing of detection batches, track events and object counts.

Capture and detection run on separate threads joined by a queue that drops the
oldest frame, so a slow detector lowers the analysed frame rate instead of
delaying the picture (see :mod:`agents.camera.pipeline`).

:mod:`agents.camera.host` runs the pipelines in the agent: one per
``[[cameras]]`` table, added and removed at run time by commands.
"""
