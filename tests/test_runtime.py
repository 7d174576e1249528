"""Process setup in one place: ``init_torch_runtime`` applies the process-wide torch settings of a role,
and the learner's per-network choices (dtype, layout, compile, chunk size) come from the config."""

from __future__ import annotations

import torch

from common import runtime
from common.config import load_config
from common.rl.networks import NUM_ACTIONS
from common.runtime import conv_layout, init_torch_runtime, learner_runtime
from learner.agent import RNDAgent


def test_conv_layout_is_channels_last_only_for_fp32_on_the_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert conv_layout(cpu, None) == torch.channels_last
    assert conv_layout(cpu, torch.bfloat16) == torch.contiguous_format
    assert conv_layout(cuda, None) == torch.contiguous_format
    agent = RNDAgent(load_config("configs/smoke.yaml", {"learner_precision": "bf16"}), NUM_ACTIONS)
    assert (agent.policy_format, agent.rnd_format) == (torch.contiguous_format, torch.channels_last)
    conv2_rnd, conv2_policy = agent.rnd.predictor.net[0][2].weight, agent.policy.trunk[0][2].weight
    assert conv2_rnd.is_contiguous(memory_format=torch.channels_last) and not conv2_rnd.is_contiguous()
    assert conv2_policy.is_contiguous()


def test_learner_runtime_follows_the_config_on_each_device() -> None:
    cfg = load_config("configs/smoke.yaml", {"learner_precision": "fp32", "learner_compile": True})
    cpu = learner_runtime(cfg, "cpu")
    assert (cpu.policy_dtype, cpu.rnd_train_dtype, cpu.compile) == (None, None, True)
    assert cpu.infer_chunk == runtime.INFER_CHUNK["cpu"]
    cuda = learner_runtime(load_config("configs/smoke.yaml", {"rnd_train_precision": "bf16"}), "cuda:1")
    assert cuda.device == torch.device("cuda", 1)
    assert (cuda.policy_dtype, cuda.rnd_train_dtype) == (torch.bfloat16, torch.bfloat16)
    assert (cuda.policy_format, cuda.infer_chunk) == (torch.contiguous_format, runtime.INFER_CHUNK["cuda"])


def test_the_agent_takes_the_runtime_it_is_given() -> None:
    cfg = load_config("configs/smoke.yaml", {"learner_precision": "fp32"})
    rt = learner_runtime(load_config("configs/smoke.yaml", {"learner_precision": "bf16"}), "cpu")
    agent = RNDAgent(cfg, NUM_ACTIONS, runtime=rt)
    assert agent.amp_dtype is torch.bfloat16 and agent.policy_format == torch.contiguous_format


def test_init_sets_threads_and_the_heap_for_the_learner_alone(monkeypatch) -> None:
    pads: list[int] = []
    monkeypatch.setattr(runtime, "keep_freed_heap", pads.append)
    cfg = load_config("configs/smoke.yaml", {"learner_heap_pad_mb": 64})
    before = torch.get_num_threads()
    try:
        init_torch_runtime(cfg, "cpu", "actor", threads=1)
        assert torch.get_num_threads() == 1 and pads == []
        got = init_torch_runtime(cfg, "cpu", "learner")
        assert pads == [64 << 20] and got == learner_runtime(cfg, "cpu")
        assert torch.get_num_threads() == 1  # None leaves the thread count as it was
    finally:
        torch.set_num_threads(before)
