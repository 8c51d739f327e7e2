"""A camera agent on a real MJPEG-over-HTTP stream, through kills and restarts of the server."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from tests.brokers import RunningBroker
from tests.camera_outages import run_outages
from tests.stream_servers import mjpeg_server

pytestmark = pytest.mark.integration


def test_mjpeg_camera_through_three_outages(mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    run_outages(mosquitto_broker, tmp_path, mjpeg_server(tmp_path, fps=10), outages=3)
