"""eval.py as the study's report calls it: the intrinsic-reward trace and the best episode's GIF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_study_fakes import REPO, is_png

import eval as eval_py
from common.cells import cell_parts
from common.config import load_config
from learner.serial import SerialRunner


def tiny_checkpoint(tmp_path: Path) -> Path:
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        {
            "NumWorkers": 2,
            "RolloutSteps": 8,
            "NumInitSteps": 4,
            "BatchSize": 8,
            "EpochSteps": 1,
            "MaxStepsPerEpisode": 30,
            "ImageHeight": 48,
            "ImageWidth": 48,
        },
    )
    runner = SerialRunner(cfg, tmp_path / "run", num_actors=1)
    runner.run(2)
    return runner.learner.save()


def test_eval_int_trace_and_best_gif(tmp_path: Path):
    ckpt = tiny_checkpoint(tmp_path)
    out = tmp_path / "eval.json"
    assert (
        eval_py.main(
            [
                str(ckpt),
                "--episodes",
                "2",
                "--int-trace",
                str(tmp_path / "trace.png"),
                "--best-gif",
                str(tmp_path / "best.gif"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    ev = json.loads(out.read_text())
    trace = ev["int_trace"]
    assert len(trace["rewards"]) == ev["episodes"][0]["length"] == 30
    assert all(np.isfinite(trace["rewards"])) and min(trace["rewards"]) > 0
    assert trace["peaks"] and all(1 <= p <= 30 for p in trace["peaks"])
    assert is_png(tmp_path / "trace.png")
    with Image.open(tmp_path / "best.gif") as im:
        assert im.format == "GIF" and im.n_frames == 15  # every 2nd of the best episode's 30 screens
    cells = ev["episodes"][0]["cells"]
    assert cells and all(cell_parts(c)[:2] == (0, 1) for c, _ in cells)  # level 0, the first room


def test_int_trace_is_the_learners_normalised_rnd_error(tmp_path: Path):
    """Written out: whiten the frame per pixel with the checkpoint's moments, clip at obs_clip, mean squared
    predictor-target difference over the features, divided by the running std of intrinsic returns."""
    data = torch.load(tiny_checkpoint(tmp_path), weights_only=True)
    cfg = load_config(None, data["config"])
    trace = eval_py.IntrinsicTrace(cfg, data["agent"])
    frame = np.random.default_rng(1).integers(0, 256, size=(48, 48)).astype(np.uint8)
    trace.add(frame, np.zeros((210, 160, 3), np.uint8))
    rms = data["agent"]["obs_rms"]
    x = (torch.from_numpy(frame).double() - rms["mean"].double()) / (rms["var"].double() + 1e-8).sqrt()
    x = x.clamp(-cfg.obs_clip, cfg.obs_clip).float()[None, None]
    from common.rl.networks import RNDModel

    rnd = RNDModel(48, 48)
    rnd.load_state_dict(data["agent"]["rnd"])  # the checkpoint's own predictor and target, loaded here
    with torch.no_grad():
        err = (rnd.predictor(x) - rnd.target(x)).pow(2).mean()
    std = float(data["agent"]["reward_rms"]["var"]) ** 0.5
    assert trace.rewards[0] == pytest.approx(float(err) / std, rel=1e-4)


def test_eval_checks_output_folders_before_playing(tmp_path: Path, capsys):
    assert eval_py.main([str(tmp_path), "--int-trace", str(tmp_path / "no" / "t.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
