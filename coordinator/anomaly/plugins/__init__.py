"""Stream anomaly detectors, one module each: the registry imports every module here.

Each module registers its class; one whose optional dependency is missing
(river_holt without river) is left out and the others still load.
"""
