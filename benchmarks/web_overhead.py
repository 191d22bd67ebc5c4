"""What a browser watching the live page costs the loop, at 200 FPS on the synthetic camera.

One run of the engine with the ``web`` sink, in phases of ``--seconds`` each: no browser,
a headless Chromium (Debian's, via Playwright) showing the page, no browser again. Per
frame the loop's own time beyond inference — (publish - grab) - (infer - preprocess) — and
the frames the page showed per second. Prints a table (median, p95, p99 in ms).

    python benchmarks/web_overhead.py [--seconds 10] [--fps 200]
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time

import numpy as np

from poseloop.realtime.engine import Engine
from poseloop.realtime.types import Frame, Pose
from poseloop.web.live import LiveView


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=200.0)
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")

    engine = Engine.from_config({
        "camera": {"kind": "synthetic", "width": 320, "height": 240, "fps": args.fps},
        "web": {"port": 0, "max_fps": 15},
        "runner": {"intra_threads": 1},
    })
    phase = ["no browser"]
    overhead: dict[str, list[float]] = {"no browser": [], "browser": [], "no browser again": []}

    def on_pose(pose: Pose, _frame: Frame) -> None:
        t = pose.timings
        if "publish" in t:
            loop = (t["publish"] - t["grab"]) - (t["infer"] - t["preprocess"])
            overhead[phase[0]].append(loop / 1e6)

    total = 3 * args.seconds + 15
    engine.open()
    thread = threading.Thread(target=engine.run, kwargs={"duration_s": total,
                                                         "on_pose": on_pose}, daemon=True)
    thread.start()
    view = engine.sink("web")
    assert isinstance(view, LiveView)
    url = view.server.url
    time.sleep(args.seconds)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("Number(document.body.dataset.framesShown || 0) > 0")
        phase[0] = "browser"
        start = int(page.evaluate("Number(document.body.dataset.framesShown)"))
        t0 = time.monotonic()
        time.sleep(args.seconds)
        shown = int(page.evaluate("Number(document.body.dataset.framesShown)")) - start
        shown_rate = shown / (time.monotonic() - t0)
        browser.close()
    phase[0] = "no browser again"
    time.sleep(args.seconds)
    engine.stop()
    thread.join()
    engine.close()
    print(f"synthetic camera {args.fps:.0f} fps, 320x240, web sink max_fps 15; loop time beyond "
          f"inference per frame (ms)")
    print(f"{'phase':18s} {'frames':>7s} {'p50':>7s} {'p95':>7s} {'p99':>7s}")
    p50 = {}
    for name, values in overhead.items():
        v = np.asarray(values)
        p50[name] = float(np.median(v))
        print(f"{name:18s} {len(v):7d} {np.median(v):7.3f} {np.percentile(v, 95):7.3f} "
              f"{np.percentile(v, 99):7.3f}")
    base = (p50["no browser"] + p50["no browser again"]) / 2
    print(f"p50 difference with a browser watching: {p50['browser'] - base:+.3f} ms; "
          f"frames shown in the browser: {shown_rate:.1f} per second")


if __name__ == "__main__":
    main()
