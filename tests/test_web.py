"""The live page: a real uvicorn server on 127.0.0.1, a real WebSocket client and a real
headless Chromium (Debian's, driven by Playwright) watching the synthetic camera's run."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from poseloop.realtime.engine import Engine
from poseloop.realtime.recorder import Recorder
from poseloop.web.live import LiveView

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ZONE = {"type": "zone", "part": "snout", "rect": {"x1": 0, "y1": 0, "x2": 100, "y2": 240}}


def _engine(tmp_path: Path, host: str = "127.0.0.1", **web: Any) -> Engine:
    return Engine.from_config({
        "camera": {"kind": "synthetic", "width": 320, "height": 240, "fps": 100},
        "devices": [{"name": "stim", "port": "emulator"}],
        "rules": [{"name": "left", "when": ZONE, "actions": [
            {"device": "stim", "command": "PULSE 1 5"}]}],
        "record": {"dir": str(tmp_path), "name": "live"},
        "web": {"host": host, "port": 0, "max_fps": 20, **web},
    })


class Running:
    """An engine running in a thread until stopped (or ``seconds`` pass)."""

    def __init__(self, engine: Engine, seconds: float = 60.0) -> None:
        self.engine = engine
        self.engine.open()
        self.stats: Any = None
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self.thread.start()

    def _run(self, seconds: float) -> None:
        self.stats = self.engine.run(duration_s=seconds)

    @property
    def view(self) -> LiveView:
        sink = self.engine.sink("web")
        assert isinstance(sink, LiveView)
        return sink

    def finish(self) -> None:
        self.engine.stop()
        self.thread.join(timeout=20)
        self.engine.close()


def _post(url: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_frames_status_and_buttons_over_a_real_websocket(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    run = Running(_engine(tmp_path))
    try:
        base = f"http://127.0.0.1:{run.view.server.port}"
        with connect(f"ws://127.0.0.1:{run.view.server.port}/ws") as ws:
            hello = json.loads(ws.recv(timeout=5))
            assert hello["type"] == "hello" and hello["bodyparts"][0] == "snout"
            frames, statuses = [], []
            deadline = time.monotonic() + 15
            while (len(frames) < 5 or not statuses) and time.monotonic() < deadline:
                message = ws.recv(timeout=5)
                if isinstance(message, bytes):
                    frames.append(cv2.imdecode(np.frombuffer(message, np.uint8), cv2.IMREAD_COLOR))
                else:
                    statuses.append(json.loads(message))
        assert len(frames) >= 5 and all(f.shape == (240, 320, 3) for f in frames)
        moved = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]
        assert max(moved) > 0.5
        assert frames[0][120, 100].tolist() != [0, 0, 0]  # the zone's edge is drawn (x = 100)
        status = statuses[-1]
        assert status["poses"] > 0 and set(status["histogram"]["counts"]) == {
            "preprocess", "infer", "decode", "process", "rules", "publish"}
        assert _post(f"{base}/api/record", {"on": False}) == {"recording": False}
        recorder = run.engine.sink("recorder")
        assert isinstance(recorder, Recorder) and recorder.paused is True
        assert _post(f"{base}/api/record", {"on": True}) == {"recording": True}
        assert _post(f"{base}/api/stop") == {"stopping": True}
        run.thread.join(timeout=20)
        assert not run.thread.is_alive()
        assert run.stats.stopped_by and run.stats.frames > 0
    finally:
        run.finish()


def test_no_browser_no_encoding(tmp_path: Path) -> None:
    run = Running(_engine(tmp_path))
    try:
        time.sleep(1.0)
        assert run.view.sent == 0 and run.view._poses > 0  # nothing encoded for nobody
    finally:
        run.finish()


def test_other_hosts_need_the_token(tmp_path: Path) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    run = Running(_engine(tmp_path, host="0.0.0.0"))
    try:
        server = run.view.server
        assert server.token and len(server.token) >= 16
        base = f"http://127.0.0.1:{server.port}"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/api/state", timeout=5)
        assert denied.value.code == 403
        with pytest.raises(urllib.error.HTTPError):
            _post(f"{base}/api/stop?token=wrong")
        assert run.thread.is_alive()  # a wrong token stopped nothing
        with urllib.request.urlopen(f"{base}/api/state?token={server.token}", timeout=5) as r:
            assert json.loads(r.read())["type"] == "status"
        with pytest.raises((InvalidStatus, Exception)):
            with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                ws.recv(timeout=5)
        with connect(f"ws://127.0.0.1:{server.port}/ws?token={server.token}") as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    finally:
        run.finish()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run does)")
def test_live_page_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    run = Running(_engine(tmp_path))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(run.view.server.url)
            page.wait_for_function("Number(document.body.dataset.framesShown || 0) >= 5",
                                   timeout=15000)
            first = page.locator("#frame").screenshot()
            page.wait_for_function("Number(document.body.dataset.framesShown) >= 10",
                                   timeout=15000)
            second = page.locator("#frame").screenshot()
            assert first != second  # the picture moves
            page.wait_for_function("document.getElementById('frame').naturalWidth === 320",
                                   timeout=5000)
            page.wait_for_function("Number(document.body.dataset.poses || 0) > 0", timeout=5000)
            assert "poses" in page.locator("#counters").inner_text()
            if os.environ.get("POSELOOP_SCREENSHOTS"):  # README's picture: docs/live-page.png
                time.sleep(2)  # a filled histogram and a few events
                page.screenshot(path=os.environ["POSELOOP_SCREENSHOTS"] + "/live-page.png")
            page.locator("#record").click()
            page.wait_for_function(
                "document.getElementById('record').textContent.includes('resume')",
                timeout=5000)
            recorder = run.engine.sink("recorder")
            assert isinstance(recorder, Recorder) and recorder.paused is True
            page.locator("#stop").click()
            run.thread.join(timeout=20)
            assert not run.thread.is_alive()
            browser.close()
    finally:
        run.finish()
