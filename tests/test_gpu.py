"""GPU paths of the learner: skipped cleanly where there is no CUDA device (CI never has one)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from common.config import load_config
from learner.agent import RNDAgent
from learner.batch import assemble
from learner.serial import SerialRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
REPO = Path(__file__).resolve().parents[1]


def _segments_and_state(tmp_path: Path):
    cfg = load_config(REPO / "configs" / "smoke.yaml", {"NumWorkers": 2, "RolloutSteps": 32, "BatchSize": 32})
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    runner.run(1)
    runner.collect()
    return cfg, list(runner.learner.pending), runner.learner.agent.state_dict()


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_cuda_scores_match_the_cpu(tmp_path: Path, precision: str) -> None:
    """The same batch scored on the GPU (fp32 with TF32, or bf16 autocast) and on the CPU in fp32."""
    cfg, segments, state = _segments_and_state(tmp_path)
    out = {}
    for device, prec in (("cpu", "fp32"), ("cuda:0", precision)):
        agent = RNDAgent(load_config(None, {**cfg.to_dict(), "learner_precision": prec}), 18, device)
        agent.load_state_dict(copy.deepcopy(state))
        batch = assemble(copy.deepcopy(segments), cfg.FrameStack, pin=device != "cpu").to(device)
        out[device] = [t.cpu() for t in agent.score(batch)]
    tol = 0.05 if precision == "auto" else 5e-3
    for a, b in zip(out["cpu"], out["cuda:0"], strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("rnd_precision", ["fp32", "bf16"])
def test_cuda_update_runs_and_stays_finite(tmp_path: Path, rnd_precision: str) -> None:
    cfg, segments, state = _segments_and_state(tmp_path)
    agent = RNDAgent(load_config(None, {**cfg.to_dict(), "rnd_train_precision": rnd_precision}), 18, "cuda:0")
    agent.load_state_dict(state)
    metrics = agent.update(assemble(segments, cfg.FrameStack, pin=True).to("cuda:0"))
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if not k.startswith("explained_var"))


def test_cuda_ratio_is_one_at_the_start_of_an_update(tmp_path: Path) -> None:
    """Under V-trace PPO's ratio is pi_theta / pi_0 with pi_0 from score() (whole-batch chunks), pi_theta from
    minibatches of another size: under bf16 autocast and cuDNN autotuning the two forward passes must still
    agree closely enough that nothing is clipped before the policy has moved."""
    cfg, segments, state = _segments_and_state(tmp_path)
    agent = RNDAgent(load_config(None, {**cfg.to_dict(), "learner_precision": "auto"}), 18, "cuda:0")
    agent.load_state_dict(state)
    batch = assemble(segments, cfg.FrameStack, pin=True).to("cuda:0")
    tg, _ = agent.compute_targets(batch)
    n = batch.T * batch.B
    for idx in torch.randperm(n, device="cuda:0").tensor_split(max(1, n // cfg.BatchSize)):
        _, info = agent.minibatch_loss(batch, idx, tg)
        assert float(info["clip_fraction"]) == 0.0
        assert float(info["approx_kl"]) < 1e-4


def test_actor_policy_step_on_cuda(tmp_path: Path) -> None:
    """actor_device: cuda: a collector with its policy on the GPU fills a valid segment, loads CPU weights as
    the weights message gives them, and its recorded log-probs are the CPU policy's (within TF32 rounding)."""
    from actors.rollout import build_collector, sample_actions

    # episodes cut at 7 steps: the bootstrap value at a time limit (_value_ext) runs on the GPU too
    cfg = load_config(
        REPO / "configs" / "smoke.yaml", {"NumWorkers": 3, "actor_device": "cuda:0", "MaxStepsPerEpisode": 7}
    )
    col = build_collector(cfg, 0, 1)
    cpu_policy = copy.deepcopy(col.policy).cpu()
    torch.nn.init.normal_(cpu_policy.pi_head.weight, std=0.5)  # a policy far from uniform
    col.policy.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in cpu_policy.state_dict().items()})
    assert next(col.policy.parameters()).is_cuda
    obs = col.obs.copy()
    col.gen.manual_seed(5)
    actions, logp = sample_actions(col.policy, obs, col.gen)
    col.gen.manual_seed(5)
    assert (sample_actions(col.policy, obs, col.gen)[0] == actions).all()  # it samples with the collector's gen
    assert actions.dtype.kind == "i" and ((0 <= actions) & (actions < 18)).all()
    with torch.inference_mode():
        logits = cpu_policy(torch.from_numpy(obs)).logits
        want = torch.log_softmax(logits, -1)[torch.arange(3), torch.from_numpy(actions)]
    torch.testing.assert_close(torch.from_numpy(logp), want, atol=1e-2, rtol=1e-2)
    arrays, _ = col.collect()
    assert arrays["actions"].shape == (cfg.RolloutSteps, 3) and (arrays["behaviour_logp"] <= 0).all()
    cut = arrays["truncated"].astype(bool)
    assert cut.any() and (arrays["trunc_value"][cut] != 0).all()


def test_whole_learner_on_cuda_checkpoint_plays_on_cpu_and_resumes(tmp_path: Path) -> None:
    """The whole Learner updates on CUDA; its checkpoint plays with CUDA hidden (eval.py) and resumes on CUDA."""
    from test_play_resume import play_and_resume

    cfg = load_config(REPO / "configs" / "smoke.yaml", {"NumWorkers": 2, "RolloutSteps": 8, "BatchSize": 8})
    play_and_resume(cfg, tmp_path, "cuda:0")


def test_reward_filter_on_cuda_is_the_cpus() -> None:
    from common.rl.normalize import RewardForwardFilter

    r = torch.rand(128, 16, dtype=torch.float64)
    cpu, gpu = RewardForwardFilter(16, 0.99), RewardForwardFilter(16, 0.99, device="cuda:0")
    ids = torch.arange(16)
    torch.testing.assert_close(gpu(r.cuda(), ids).cpu(), cpu(r, ids), rtol=1e-12, atol=1e-12)
    assert gpu.state.device.type == "cuda" and gpu.state.dtype == torch.float64


def test_pinned_assemble_is_the_unpinned(tmp_path: Path) -> None:
    from test_assemble_once import random_segments

    segs = random_segments(4, [8, 8, 3], t=16, hw=44)
    a, b = assemble(segs, 4, pin=True), assemble(segs, 4, pin=False)
    assert a.frames.is_pinned() and torch.equal(a.frames, b.frames) and torch.equal(a.actions, b.actions)
