"""Trajectory and likelihood plots of a pose table, as DeepLabCut's ``plot_trajectories``.

``trajectory.png``: every bodypart's path in the image (points at likelihood >= pcutoff);
``likelihood.png``: likelihood against frame; ``xy.png``: x and y against frame; a
multi-animal table gets one column of panels per animal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poseloop.visualize.pose_table import PoseTable


def plot_poses(table: PoseTable, out: Path, pcutoff: float = 0.6,
               image_size: tuple[int, int] | None = None) -> list[Path]:
    """Write the three PNGs into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    n, k = len(table.individuals), len(table.bodyparts)
    colors = plt.get_cmap("rainbow")(np.linspace(0, 1, max(k, 2)))
    written = []
    for name in ("trajectory", "likelihood", "xy"):
        rows = 2 if name == "xy" else 1
        fig, axes = plt.subplots(rows, n, figsize=(5 * n, 4 * rows), squeeze=False)
        for a, animal in enumerate(table.individuals):
            pts = table.points[:, a]
            good = pts[..., 2] >= pcutoff
            for j, part in enumerate(table.bodyparts):
                c = colors[j]
                if name == "trajectory":
                    ax = axes[0, a]
                    ax.plot(pts[good[:, j], j, 0], pts[good[:, j], j, 1], ".", ms=2, color=c,
                            label=part)
                elif name == "likelihood":
                    ax = axes[0, a]
                    ax.plot(table.frames, pts[:, j, 2], "-", lw=0.8, color=c, label=part)
                else:
                    for r, coord in enumerate("xy"):
                        axes[r, a].plot(table.frames, np.where(good[:, j], pts[:, j, r], np.nan),
                                        "-", lw=0.8, color=c, label=part)
                        axes[r, a].set_ylabel(f"{coord} (px)")
            for ax in axes[:, a]:
                ax.set_title(animal if table.multi_animal else "")
                ax.grid(alpha=0.3)
            if name == "trajectory":
                ax = axes[0, a]
                ax.set_xlabel("x (px)")
                ax.set_ylabel("y (px)")
                if image_size:
                    ax.set_xlim(0, image_size[0])
                    ax.set_ylim(image_size[1], 0)
                else:
                    ax.invert_yaxis()
                ax.set_aspect("equal", adjustable="datalim")
            elif name == "likelihood":
                axes[0, a].axhline(pcutoff, color="k", ls="--", lw=0.8)
                axes[0, a].set_xlabel("frame")
                axes[0, a].set_ylabel("likelihood")
            else:
                axes[1, a].set_xlabel("frame")
        axes[0, -1].legend(fontsize=6, loc="upper right", ncol=1 + k // 12)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
