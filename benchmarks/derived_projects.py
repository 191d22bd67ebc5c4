"""Derive hard DeepLabCut projects from openfield, to find where a training recipe fails.

openfield is 116 frames of 640x480 with a ~130-px mouse: the project the old recipe was
tuned on. The derived projects look like what other labs bring:

- ``closeup``: 55 frames cropped around the animal (320x288 px) and upscaled 2.6x to
  832x749: a close-up whose labels spread over ~350 px (like a reaching task's camera);
- ``mixed``: 60 close-ups, two thirds at 832x749 and one third at 640x470 (2.0x), so the
  same animal appears at two sizes in frames of two sizes;
- ``few``: 50 frames of the original project (a new user's first labeling round).

Labels follow the pixel-centre-at-integer convention: x' = (x - x0 + 0.5) * zoom - 0.5.
Each project is written as a plain DeepLabCut folder (config.yaml + CollectedData csv).

    python benchmarks/derived_projects.py OUT_DIR        # writes OUT_DIR/{closeup,mixed,few}
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import yaml

from poseloop.project import Project, read_project

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OPENFIELD = SHARED / "datasets" / "openfield-Pranav"
#: The source window cut around the animal, in openfield pixels (width, height).
WINDOW = (320, 288)


def _write(project: Project, out: Path, name: str,
           frames: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write RGB images and K x 2 labels as a DeepLabCut project in ``out/name``."""
    root = out / name
    folder = root / "labeled-data" / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (rgb, kp) in enumerate(frames):
        rel = f"labeled-data/{name}/img{i:04d}.png"
        cv2.imwrite(str(root / rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        rows.append((rel, kp.reshape(-1)))
    k = len(project.bodyparts)
    with open(folder / f"CollectedData_{project.scorer}.csv", "w") as f:
        f.write("scorer," + ",".join([project.scorer] * 2 * k) + "\n")
        f.write("bodyparts," + ",".join(p for p in project.bodyparts for _ in "xy") + "\n")
        f.write("coords," + ",".join("xy" * k) + "\n")
        for rel, values in rows:
            cells = ["" if not np.isfinite(v) else f"{v:.3f}" for v in values]
            f.write(rel + "," + ",".join(cells) + "\n")
    config = {
        "Task": name, "scorer": project.scorer, "date": "derived",
        "bodyparts": project.bodyparts, "skeleton": [], "pcutoff": project.pcutoff,
        "TrainingFraction": [0.9], "project_path": str(root),
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def closeup(image: np.ndarray, kp: np.ndarray, rng: np.random.Generator,
            size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cut WINDOW around the labels (randomly off-centre, inside the frame), resize to size."""
    h, w = image.shape[:2]
    ww, wh = WINDOW
    lo, hi = np.nanmin(kp, axis=0), np.nanmax(kp, axis=0)
    centre = (lo + hi) / 2 + rng.uniform(-0.15, 0.15, 2) * np.array(WINDOW)
    x0 = int(np.clip(round(centre[0] - ww / 2), 0, w - ww))
    y0 = int(np.clip(round(centre[1] - wh / 2), 0, h - wh))
    crop = image[y0:y0 + wh, x0:x0 + ww]
    out = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)
    zoom = np.array([size[0] / ww, size[1] / wh])
    moved = (kp - np.array([x0, y0]) + 0.5) * zoom - 0.5
    inside = (moved >= 0).all(axis=1) & (moved <= np.array(size) - 1).all(axis=1)
    moved[~inside] = np.nan  # a label cut off by the window is unlabeled, as a labeler would
    return out, moved.astype(np.float32)


def derive(out: Path, source: Path = OPENFIELD, seed: int = 0) -> dict[str, Path]:
    """Write the three derived projects under ``out``; return their folders."""
    project = read_project(source)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(project.frames))
    frames = [project.frames[i] for i in order]
    images = {f.image: project.load_image(f) for f in frames[:60]}
    close = [closeup(images[f.image], f.keypoints, rng, (832, 749)) for f in frames[:55]]
    mixed = [
        closeup(images[f.image], f.keypoints, rng, (640, 470) if i % 3 == 2 else (832, 749))
        for i, f in enumerate(frames[:60])
    ]
    few = [(images[f.image], f.keypoints) for f in frames[:50]]
    return {
        "closeup": _write(project, out, "closeup", close),
        "mixed": _write(project, out, "mixed", mixed),
        "few": _write(project, out, "few", few),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to write the derived projects into")
    args = ap.parse_args()
    for name, root in derive(Path(args.out)).items():
        project = read_project(root)
        sizes = sorted({project.load_image(f).shape[1::-1] for f in project.frames})
        print(f"{name}: {len(project.frames)} frames, sizes {sizes}, {root}")


if __name__ == "__main__":
    main()
