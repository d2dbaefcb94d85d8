"""report.html in a real browser: headless Chromium at 1280 px, no horizontal overflow, the verdict shown.

Needs Debian's `chromium` (CI installs it); skipped, saying so, only when no Chromium is found.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess

import pytest

from kocurate.experiment.report import write_report
from test_experiment_units import fake_result

WIDTH = 1280


def _chromium() -> str | None:
    for name in (os.environ.get("KOCURATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium, or set "
                                                        "KOCURATE_CHROMIUM); CI installs it")

# Measures the page, then (to show the measure can fail) the page with a 2000 px element added.
_PROBE = ("<script>const root = document.documentElement, body = document.body;"
          "body.setAttribute('data-scroll-width', root.scrollWidth);"
          "body.setAttribute('data-client-width', root.clientWidth);"
          "const wide = document.createElement('div'); wide.style.width = '2000px'; wide.textContent = 'x'; body.appendChild(wide);"
          "body.setAttribute('data-wide-scroll-width', root.scrollWidth); wide.remove();</script></body>")


def _browser(tmp_path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _widths(tmp_path, page: str) -> tuple[int, int, int, str]:
    """(document scroll width, viewport width, scroll width with a 2000 px element, the DOM after load)
    of `page` at 1280 px."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE), encoding="utf-8")
    dom = _browser(tmp_path, f"--window-size={WIDTH},900", "--virtual-time-budget=3000", "--dump-dom", probe.as_uri())
    scroll = re.search(r'data-scroll-width="(\d+)"', dom)
    client = re.search(r'data-client-width="(\d+)"', dom)
    wide = re.search(r'data-wide-scroll-width="(\d+)"', dom)
    assert scroll and client and wide, dom[-500:]
    return int(scroll.group(1)), int(client.group(1)), int(wide.group(1)), dom


def test_report_reads_at_1280px_without_horizontal_overflow(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    data = write_report(fake_result(report), report)
    page = (report / "report.html").read_text(encoding="utf-8")

    scroll, client, wide, dom = _widths(tmp_path, page)
    assert client == WIDTH and scroll <= client, f"report.html is {scroll} px wide in a {client} px window"
    for sentence in data["headline"]:
        assert html.escape(sentence, quote=False) in dom  # the verdict is on the page, as text

    assert wide >= 2000  # the measure can fail: something wider than the window shows up in it

    screenshot = report / "report.png"
    _browser(tmp_path, f"--window-size={WIDTH},2000", f"--screenshot={screenshot}", (report / "report.html").as_uri())
    header = screenshot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">I", header[16:20])[0] == WIDTH
