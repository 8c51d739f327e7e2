"""Every registered plugin against the battery of its kind (tests/checks/): a new plugin file is checked."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from agents.detectors.base import detector_types as backend_types
from coordinator.anomaly.base import detector_types as anomaly_detector_types
from tests.checks import anomaly_detectors, detector_backends


def cases(types: list[str], yield_checks: Callable[[str], Iterable[Callable[..., None]]]) -> list[Any]:
    return [pytest.param(kind, check, id=f"{kind}:{check.__name__}")
            for kind in types for check in yield_checks(kind)]


@pytest.mark.parametrize(("kind", "check"), cases(anomaly_detector_types(), anomaly_detectors.yield_checks))
def test_anomaly_detector(kind: str, check: Callable[[str], None]) -> None:
    check(kind)


@pytest.mark.parametrize(("kind", "check"), cases(backend_types(), detector_backends.yield_checks))
def test_detector_backend(kind: str, check: Callable[[str, Path], None], tmp_path: Path) -> None:
    check(kind, tmp_path)
