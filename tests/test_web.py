"""The live page: a real uvicorn server on 127.0.0.1, a real WebSocket client and a real
headless Chromium (Debian's, driven by Playwright) watching the synthetic camera's run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
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


@contextlib.contextmanager
def _chromium_page(url: str, **page: Any) -> Iterator[Any]:
    """A page of Debian's headless Chromium (driven by Playwright) opened at ``url``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            tab = browser.new_page(**page)
            tab.goto(url)
            yield tab
        finally:
            browser.close()


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
    run = Running(_engine(tmp_path))
    try:
        with _chromium_page(run.view.server.url) as page:
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
    finally:
        run.finish()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run does)")
def test_live_page_in_chromium_with_three_cameras(tmp_path: Path) -> None:
    """Live 3D on the page: camera 0's view with its 2D points, and the triangulated
    coordinates listed as text (x, y, z in mm near the rig's 20 mm animal height)."""
    from poseloop.realtime.cameras.synthetic_view import write_view_calibration

    calibration = write_view_calibration(tmp_path / "calibration.toml")
    engine = Engine.from_config({
        "group": {"sync": "trigger", "tolerance_ms": 100,
                  "cameras": [{"kind": "synthetic_view", "view": v} for v in range(3)],
                  "triangulation": {"calibration": str(calibration)}},
        "web": {"host": "127.0.0.1", "port": 0, "max_fps": 10},
    })
    run = Running(engine)
    try:
        with _chromium_page(run.view.server.url) as page:
            page.wait_for_function("Number(document.body.dataset.framesShown || 0) >= 3",
                                   timeout=20000)
            page.wait_for_function("document.getElementById('frame').naturalWidth === 400",
                                   timeout=5000)
            page.wait_for_function(  # a set the model saw from two views or more
                "document.getElementById('points3d').textContent.split('\\n').some("
                "l => l.trim() && !l.includes('–'))", timeout=10000)
            # one set can be 10 mm off (the engine test bounds the median error at 5 mm), so
            # the page must show, within a few seconds, a set with every point at the height
            deadline = time.monotonic() + 10
            while True:
                text = page.locator("#points3d").inner_text()
                rows = [line.split() for line in text.splitlines()]
                assert [r[1] for r in rows] == ["snout", "leftear", "rightear", "tailbase"], text
                heights = [float(r[-2]) for r in rows if r[-2] != "–"]  # x y z likelihood
                if (heights and all(abs(z - 20.0) < 10 for z in heights)
                        or time.monotonic() > deadline):
                    break
                time.sleep(0.2)
            assert heights and all(abs(z - 20.0) < 10 for z in heights), text
    finally:
        run.finish()
    assert run.stats is not None and not run.stats.errors


# ------------------------------------------------------------------------------- labeler
@pytest.fixture
def labeling_project(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    from poseloop.labeling.extract_frames import extract_frames
    from poseloop.labeling.new_project import new_project
    from poseloop.synthetic import write_project

    synth = write_project(tmp_path / "synth", n_frames=2, video_frames=30)
    individuals = getattr(request, "param", ())
    root = new_project("lab", [synth / "videos" / "synth.mp4"], ["snout", "tail"],
                       individuals=individuals, out=tmp_path, scorer="ana")
    extract_frames(root, "uniform", n=3, log=lambda _: None)
    return root


def _wait_labels(root: Path, check: Any, timeout: float = 10.0) -> dict:
    from poseloop.labeling.label_store import LabelStore

    deadline = time.monotonic() + timeout
    while True:
        labels = LabelStore(root, "synth").labels
        if check(labels):
            return labels
        assert time.monotonic() < deadline, f"labels never became right: {labels}"
        time.sleep(0.05)


def test_labeler_api_refuses_bad_points(labeling_project: Path) -> None:
    from poseloop.web.labeler import labeler_server

    server = labeler_server(labeling_project, port=0, log=lambda _: None)
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/api/folder/synth", timeout=5) as r:
            folder = json.loads(r.read())
        assert folder["bodyparts"] == ["snout", "tail"] and len(folder["images"]) == 3
        with pytest.raises(urllib.error.HTTPError) as bad:
            _post(f"{base}/api/label", {"folder": "synth", "image": folder["images"][0],
                                        "bodypart": "nose", "x": 1, "y": 2})
        assert bad.value.code == 400 and "nose" in bad.value.read().decode()
    finally:
        server.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run does)")
@pytest.mark.parametrize("labeling_project", [(), ("m1", "m2")], indirect=True,
                         ids=["single", "multi"])
def test_labeler_in_chromium(labeling_project: Path) -> None:
    from poseloop.project import read_project
    from poseloop.web.labeler import labeler_server

    root = labeling_project
    multi = "m1" in (root / "config.yaml").read_text()
    who = "m2" if multi else ""
    server = labeler_server(root, port=0, log=lambda _: None)
    try:
        with _chromium_page(server.url, viewport={"width": 1280, "height": 900}) as page:
            page.wait_for_function("document.body.dataset.ready")
            box = page.locator("#canvas").bounding_box()
            assert box is not None
            first = page.evaluate("document.body.dataset.ready")

            def at(x: float, y: float) -> tuple[float, float]:
                return box["x"] + x, box["y"] + y

            if multi:
                page.keyboard.press("a")  # the second animal
            page.mouse.click(*at(50, 60))  # snout
            page.mouse.click(*at(100, 120))  # then tail (the next part)
            labels = _wait_labels(root, lambda lab: len(lab[first]) == 2)
            if multi and os.environ.get("POSELOOP_SCREENSHOTS"):  # README: docs/labeler.png
                page.screenshot(path=os.environ["POSELOOP_SCREENSHOTS"] + "/labeler.png",
                                clip={"x": 0, "y": 0, "width": 1280, "height": 420})
            assert labels[first] == {(who, "snout"): (50.0, 60.0), (who, "tail"): (100.0, 120.0)}
            # drag the snout
            page.mouse.move(*at(50, 60))
            page.mouse.down()
            page.mouse.move(*at(60, 70))
            page.mouse.move(*at(70, 80))
            page.mouse.up()
            _wait_labels(root, lambda lab: lab[first].get((who, "snout")) == (70.0, 80.0))
            # select the tail and mark it not visible
            page.mouse.click(*at(100, 120))
            page.keyboard.press("Delete")
            _wait_labels(root, lambda lab: (who, "tail") not in lab[first])
            # a reload shows what was saved
            page.reload()
            page.wait_for_function("document.body.dataset.ready")
            shown = json.loads(page.evaluate("document.body.dataset.points"))
            assert shown == [[who, "snout", 70, 80]]
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"document.body.dataset.ready && "
                                   f"document.body.dataset.ready !== '{first}'")
            second = page.evaluate("document.body.dataset.ready")
            # zoom in 1.25x around (50, 60): image (150, 100) is then at screen (175, 110)
            page.mouse.move(*at(50, 60))
            page.mouse.wheel(0, -100)
            page.mouse.click(*at(175, 110))
            first_animal = "m1" if multi else ""
            _wait_labels(root, lambda lab: lab[second].get((first_animal, "snout"))
                         == (150.0, 100.0))
        project = read_project(root)
        frame = next(f for f in project.frames if f.image.endswith(first))
        snout = frame.keypoints[1, 0] if multi else frame.keypoints[0]
        np.testing.assert_array_equal(snout, [70.0, 80.0])
    finally:
        server.stop()


def test_cli_run_with_web(capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    assert main(["run", "--web", "127.0.0.1:0", "--max-frames", "30"]) == 0
    out = capsys.readouterr().out
    assert "live view: http://127.0.0.1:" in out and "30 frames" in out
    assert main(["run", "--web", "nonsense", "--max-frames", "3"]) == 2
    assert "--web: expected HOST:PORT" in capsys.readouterr().err
