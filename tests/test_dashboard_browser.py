"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a live coordinator.

The browser is the machine's own (/usr/bin/chromium, from the Debian package
``chromium``); Playwright never downloads one. Screenshots go to the test's
temporary directory, and also to ``$EDGEBUS_SCREENSHOTS`` when it is set
(``EDGEBUS_SCREENSHOTS=docs`` refreshes the ones the README shows).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.demo import SimulatedAgent
from tests.brokers import MosquittoUnderTest
from tests.bus_helpers import config_for, wait_until
from tests.http_helpers import ApiCoordinator, Sender, api_coordinator, metrics_batch, normal

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# As the machine's notes prescribe for headless Chromium here: no GPU, no background traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


def require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"no {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("EDGEBUS_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"EDGEBUS_REQUIRE_CHROMIUM=1 but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def fleet(mosquitto_broker: MosquittoUnderTest, tmp_path: Path) -> Iterator[ApiCoordinator]:
    """A coordinator with one simulated gateway publishing 5 times a second and one device with
    an incident (an anomaly on its cpu_percent chart)."""
    with api_coordinator(mosquitto_broker, tmp_path / "coordinator") as api:
        agent = SimulatedAgent("demo-gw-01", config_for(mosquitto_broker, client_id="unset"), interval=0.2,
                               seed=3)
        agent.start()
        sender = Sender(mosquitto_broker)
        try:
            t0 = time.time_ns() // 1_000_000 - 60_000
            sender.publish("edgebus/gw-spike/status", "online", retain=True)
            sender.publish("edgebus/gw-spike/metrics", metrics_batch("gw-spike", 0, normal(50, 0), t0_ms=t0))
            sender.publish("edgebus/gw-spike/metrics", metrics_batch("gw-spike", 50, [97.0], t0_ms=t0))
            sender.flush()
            assert wait_until(lambda: len(api.store.anomalies("gw-spike")) == 1)
            yield api
        finally:
            sender.stop()
            agent.stop()


def save(page: object, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    extra = os.environ.get("EDGEBUS_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        (Path(extra) / name).write_bytes(path.read_bytes())
    return path


def test_dashboard_shows_the_fleet_live(fleet: ApiCoordinator, tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 860}, color_scheme="light")
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(fleet.url)
            page.wait_for_selector("#live[data-state=open]")
            cell = 'tr[data-device="demo-gw-01"] td[data-metric="cpu_percent"]'
            # data-seen_cpu_percent is set only by a value that came over the WebSocket.
            page.wait_for_selector('tr[data-device="demo-gw-01"][data-seen_cpu_percent="1"]')
            first = page.inner_text(cell)
            page.wait_for_function("([sel, was]) => document.querySelector(sel).textContent !== was",
                                   arg=[cell, first])
            assert page.inner_text("#n-devices") == "2"
            assert page.inner_text("#n-anomalies") == "1"
            save(page, tmp_path, "dashboard-overview.png")

            page.click('tr[data-device="demo-gw-01"] a')
            page.wait_for_selector('.chart[data-metric="cpu_percent"] path.line')
            assert page.inner_text("#device-title") == "demo-gw-01"
            now = '.chart[data-metric="cpu_percent"] .now'
            shown = page.inner_text(now)
            page.wait_for_function("([sel, was]) => document.querySelector(sel).textContent !== was",
                                   arg=[now, shown])
            assert page.locator(".chart").count() == 8  # every metric the agent sends

            page.goto(fleet.url + "#/device/gw-spike")
            mark = page.wait_for_selector('.chart[data-metric="cpu_percent"] .anomaly-mark')
            assert mark is not None
            assert page.locator('.chart[data-metric="cpu_percent"] .anomaly-mark').count() == 1
            listed = page.wait_for_selector("#device-anomalies li[data-anomaly]")
            assert listed is not None and "97" in listed.inner_text()
            save(page, tmp_path, "dashboard-device.png")

            page.emulate_media(color_scheme="dark")
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(fleet.url + "#/")
            page.wait_for_selector('tr[data-device="demo-gw-01"]')
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(13, 17, 23)"  # the dark palette
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
            save(page, tmp_path, "dashboard-phone-dark.png")
        finally:
            browser.close()
    assert errors == []
