"""A camera agent on a real RTSP stream (GStreamer's RTSP server), through kills and restarts.

The server needs Debian's ``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0``
(``.ci/run`` installs them); without them this test skips, unless
``EDGEBUS_REQUIRE_RTSP=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from tests.brokers import RunningBroker
from tests.camera_outages import run_outages
from tests.stream_servers import require_rtsp, rtsp_server

pytestmark = pytest.mark.integration


def test_rtsp_camera_through_two_outages(mosquitto_broker: RunningBroker, tmp_path: Path) -> None:
    run_outages(mosquitto_broker, tmp_path, rtsp_server(tmp_path, require_rtsp(), fps=10), outages=2)
