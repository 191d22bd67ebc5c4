"""The embedded demo runs end to end with no data and no network access."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    assert main(["demo", "--out", str(tmp_path), "--seconds", "8"]) == 0
    out = capsys.readouterr().out
    assert "[3/3] evaluating" in out and "tailbase" in out
    summary = (tmp_path / "run" / "evaluation" / "summary.json").read_text()
    import json

    result = json.loads(summary)
    assert result["n_test"] > 0 and math.isfinite(result["test_rmse"])
    assert (tmp_path / "project" / "config.yaml").is_file()
