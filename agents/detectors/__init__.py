"""Detection backends behind one interface, chosen by the ``type`` key of a camera's
``[cameras.detector]`` table (see :mod:`agents.detectors.base`)."""
