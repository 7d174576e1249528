"""Process-wide torch settings, decided in one place and applied once per process.

A learner or an actor process calls ``init_torch_runtime`` once, before it builds its networks. It
applies what is process-wide (torch's thread count, the learner's C heap, TF32 and cuDNN's autotuner on
CUDA) and returns a ``TorchRuntime``: the per-network choices (autocast dtype, memory layout, compile,
scoring chunk size) that the networks' owners read. ``learner_runtime`` and ``actor_dtype`` make the
same choices without touching the process, for tests and tools that build an agent in a process they
share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from common.config import Config
from common.heap import keep_freed_heap
from common.precision import autocast_dtype

# samples per no-grad forward pass when scoring a whole batch: on the CPU a chunk whose activations stay in
# cache runs the scoring and intrinsic passes faster than one pass over 2,048; a GPU wants large ones
INFER_CHUNK = {"cpu": 256, "cuda": 4096}


@dataclass(frozen=True)
class TorchRuntime:
    """How a learner's networks compute on ``device``."""

    device: torch.device
    policy_dtype: torch.dtype | None  # autocast dtype of the policy's convs and shared layers; None: fp32
    rnd_train_dtype: torch.dtype | None  # autocast dtype of the predictor's training step; None: fp32
    policy_format: torch.memory_format  # the layout the policy's convs run in
    rnd_format: torch.memory_format  # the layout RND's convs run in
    infer_chunk: int  # samples per no-grad scoring pass
    compile: bool  # torch.compile the policy trunk and RND


def conv_layout(device: torch.device, amp_dtype: torch.dtype | None) -> torch.memory_format:
    """The layout a network's convs run fastest in: channels-last for fp32 on the CPU, where oneDNN's
    convolutions gain 1.25x per update from it; the default layout for bf16 (its input then made directly in
    bf16), which measured as fast, and everywhere on CUDA (scripts/profile/learner_cpu.py, docs/benchmarks.md)."""
    fp32_cpu = device.type == "cpu" and amp_dtype is None
    return torch.channels_last if fp32_cpu else torch.contiguous_format


def learner_runtime(cfg: Config, device: torch.device | str) -> TorchRuntime:
    """The learner's per-network choices on ``device``, from the config; touches nothing process-wide."""
    dev = torch.device(device)
    frame_hw = (cfg.ImageHeight, cfg.ImageWidth)
    policy_dtype = autocast_dtype(cfg.learner_precision, dev, frame_hw)
    return TorchRuntime(
        device=dev,
        policy_dtype=policy_dtype,
        rnd_train_dtype=autocast_dtype(cfg.rnd_train_precision, dev, frame_hw),
        policy_format=conv_layout(dev, policy_dtype),
        rnd_format=conv_layout(dev, amp_dtype=None),  # RND's target and reward pass compute in fp32 everywhere
        infer_chunk=INFER_CHUNK.get(dev.type, INFER_CHUNK["cuda"]),
        compile=cfg.learner_compile,
    )


# the fewest cores at which a local learner's threads are fitted to the cores its actors leave: on a small
# machine the actors idle during a synchronous update, and one learner thread would leave a core unused
MIN_CORES_FOR_LEARNER_THREADS = 8


def learner_threads(cores: int | None, actors_here: int, local: bool) -> int | None:
    """torch's thread count for a learner sharing its host with ``actors_here`` actors: the cores they leave,
    at least 1; None (torch's default, one per core) in the learner role (its actors are elsewhere unless
    told), and on machines of fewer than MIN_CORES_FOR_LEARNER_THREADS cores."""
    if not local or cores is None or cores < MIN_CORES_FOR_LEARNER_THREADS:
        return None
    return max(1, cores - actors_here)


def actor_dtype(cfg: Config, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of an actor's policy step on ``device`` (None: fp32)."""
    return autocast_dtype(cfg.actor_precision, device, (cfg.ImageHeight, cfg.ImageWidth))


def init_torch_runtime(
    cfg: Config, device: torch.device | str, role: Literal["learner", "actor"], threads: int | None = None
) -> TorchRuntime:
    """Apply this process's torch settings for ``role`` on ``device`` and return the learner's choices.

    - ``threads``: torch's intra-op thread count (None leaves torch's default, one per core).
    - The learner's C heap keeps ``learner_heap_pad_mb`` of freed memory for reuse (``common/heap.py``): an
      update frees and reallocates the same large tensors every minibatch. Actors gain nothing from it.
    - On the learner's CUDA device: TF32 for the fp32 parts (the heads, RND): inputs rounded to 10 mantissa bits, fp32
      accumulation. Emulated, it moved RND's per-frame error by at most 0.43% and kept the frames' novelty
      ranking (Spearman 1.00000) with the predictor's error down 139-fold; bf16 moved it 5-12x as much
      (scripts/profile/tf32_rnd.py, docs/benchmarks.md). cuDNN picks the fastest conv algorithms for each
      input shape it sees, which pays because every minibatch has the same shapes.
    """
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    dev = torch.device(device)
    if role == "learner":
        keep_freed_heap(cfg.learner_heap_pad_mb << 20)
    if role == "learner" and dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return learner_runtime(cfg, dev)
