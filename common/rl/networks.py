"""The paper's networks (Burda et al. 2018, arXiv 1810.12894, appendix A.4), as its released code builds
them (``policies/cnn_policy_param_matched.py``: ``apply_policy`` and ``define_self_prediction_rew``).

Policy: conv 32x8x8/4, 64x4x4/2, 64x4x4/1 (ReLU), fc 256, fc 448 (ReLU): the shared features x. Two
residual branches of one fc 448 each (ReLU) read x: the policy's, x + relu(W_pi x) -> logits, and the
values', x + relu(W_v x) -> extrinsic value and intrinsic value (two linear outputs of one branch).
RND target: conv 32x8x8/4, 64x4x4/2, 64x3x3/1 (LeakyReLU), linear 512, frozen. Predictor: the same
convs (LeakyReLU), fc 512, fc 512 (ReLU), linear 512. LeakyReLU's negative slope is 0.2, TensorFlow's
default for ``tf.nn.leaky_relu``, which the release calls without one. Orthogonal init throughout, zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from common.precision import autocast

NUM_ACTIONS = 18  # the full ALE action set, for every game
LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default alpha
# (kernel, stride) of the three convs; out channels 32, 64, 64 in both
POLICY_CONVS = ((8, 4), (4, 2), (4, 1))
RND_CONVS = ((8, 4), (4, 2), (3, 1))


class PolicyOutput(NamedTuple):
    logits: torch.Tensor  # [B, A]
    value_ext: torch.Tensor  # [B]
    value_int: torch.Tensor  # [B]


def _conv_stack(in_ch: int, convs: tuple[tuple[int, int], ...], act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out_ch, (k, s) in zip((32, 64, 64), convs, strict=True):
        layers += [nn.Conv2d(in_ch, out_ch, k, stride=s), act()]
        in_ch = out_ch
    return nn.Sequential(*layers, nn.Flatten())


def conv_out_hw(h: int, w: int, convs: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """Spatial size after ``convs`` (no padding); 0 or less where the frame is too small for them."""
    for k, s in convs:
        h, w = (h - k) // s + 1, (w - k) // s + 1
    return h, w


def _conv_out(h: int, w: int, convs: tuple[tuple[int, int], ...]) -> int:
    oh, ow = conv_out_hw(h, w, convs)
    if oh < 1 or ow < 1:
        raise ValueError(f"a {h}x{w} frame is too small for the convs {convs} (kernel, stride)")
    return 64 * oh * ow


def _leaky() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE)


def _orthogonal_(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PolicyNet(nn.Module):
    """obs uint8 [B, C, H, W] (stacked frames) -> PolicyOutput."""

    def __init__(self, num_actions: int, frame_stack: int = 4, height: int = 84, width: int = 84):
        super().__init__()
        self.trunk = nn.Sequential(
            _conv_stack(frame_stack, POLICY_CONVS, nn.ReLU),
            nn.Linear(_conv_out(height, width, POLICY_CONVS), 256),
            nn.ReLU(),
            nn.Linear(256, 448),
            nn.ReLU(),
        )
        self.pi_extra = nn.Linear(448, 448)
        self.v_extra = nn.Linear(448, 448)
        self.pi_head = nn.Linear(448, num_actions)
        self.v_ext = nn.Linear(448, 1)
        self.v_int = nn.Linear(448, 1)
        _orthogonal_(self)
        nn.init.orthogonal_(self.pi_extra.weight, 0.1)
        nn.init.orthogonal_(self.v_extra.weight, 0.1)
        nn.init.orthogonal_(self.pi_head.weight, 0.01)
        nn.init.orthogonal_(self.v_ext.weight, 0.01)
        nn.init.orthogonal_(self.v_int.weight, 0.01)

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        return self.heads(self.features(obs))

    def features(
        self,
        obs: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """uint8 [B, C, H, W] -> [B, 448]: the convs and the shared fully connected layers. ``dtype`` and
        ``memory_format`` are those the first conv computes in (see ``scaled_obs``)."""
        return self.trunk(scaled_obs(obs, dtype, memory_format))

    def float_features(
        self, obs: torch.Tensor, dtype: torch.dtype | None, memory_format: torch.memory_format
    ) -> torch.Tensor:
        """uint8 [B, C, H, W] -> fp32 [B, 448]: the trunk under ``dtype`` autocast (None: fp32) from an input made
        in ``dtype`` and ``memory_format``, its output made fp32 for the heads. The learner's ``run_policy`` and
        the actors' policy step both compute this, so that with the same weights the actor's log-probs are the
        learner's (V-trace's rho exactly 1 at lag 0)."""
        with autocast(obs.device, dtype):
            x = self.features(obs, dtype or torch.float32, memory_format)
        return x.float()

    def step_logits(
        self, obs: torch.Tensor, dtype: torch.dtype | None, memory_format: torch.memory_format
    ) -> torch.Tensor:
        """uint8 [B, C, H, W] -> fp32 logits [B, A] as the learner computes them: ``float_features``, then the
        policy head in fp32."""
        return self._policy_head(self.float_features(obs, dtype, memory_format))

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> logits [B, A], the same as ``forward(obs).logits``. What an actor samples
        from: it skips the value heads, which only the learner needs (6% of the step at a batch of 9)."""
        return self._policy_head(self.features(obs))

    def heads(self, x: torch.Tensor) -> PolicyOutput:
        """[B, 448] -> logits and both values (the learner runs these in fp32 even under bf16 autocast)."""
        v = x + torch.relu(self.v_extra(x))
        return PolicyOutput(self._policy_head(x), self.v_ext(v).squeeze(-1), self.v_int(v).squeeze(-1))

    def _policy_head(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 448] -> logits [B, A]: the residual policy layer and the logits."""
        return self.pi_head(x + torch.relu(self.pi_extra(x)))


def scaled_obs(
    obs: torch.Tensor, dtype: torch.dtype = torch.float32, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """uint8 [B, C, H, W] -> obs / 255 as ``dtype`` in ``memory_format``: one converting copy, one in-place scale.

    Made directly in the dtype and layout the first conv reads, with no fp32 tensor to convert again: under
    bf16 autocast that second copy of the batch took longer than the conv. The values are those autocast
    gives an fp32 input: 0..255 are exact in bf16, and the scale is applied in fp32 and rounded once."""
    x = torch.empty_like(obs, dtype=dtype, memory_format=memory_format)
    return x.copy_(obs).mul_(1.0 / 255.0)


class RNDTarget(nn.Module):
    """Normalised frame float [B, 1, H, W] -> random features [B, 512]. Never trained."""

    def __init__(self, height: int = 84, width: int = 84, out_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            _conv_stack(1, RND_CONVS, _leaky), nn.Linear(_conv_out(height, width, RND_CONVS), out_dim)
        )
        _orthogonal_(self)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RNDPredictor(nn.Module):
    """Normalised frame float [B, 1, H, W] -> predicted features [B, 512]."""

    def __init__(self, height: int = 84, width: int = 84, out_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            _conv_stack(1, RND_CONVS, _leaky),
            nn.Linear(_conv_out(height, width, RND_CONVS), 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, out_dim),
        )
        _orthogonal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RNDModel(nn.Module):
    """Target + predictor; ``forward`` gives the per-sample squared error mean over features: [B]."""

    def __init__(self, height: int = 84, width: int = 84):
        super().__init__()
        self.target = RNDTarget(height, width)
        self.predictor = RNDPredictor(height, width)

    def forward(self, x: torch.Tensor, predictor_dtype: torch.dtype | None = None) -> torch.Tensor:
        """x float [B, 1, H, W] -> error [B]. ``predictor_dtype``: an autocast dtype for the predictor alone
        (its training step); the target, the difference and the error stay fp32 in any case."""
        with torch.no_grad():
            tgt = self.target(x)
        if predictor_dtype is None:
            pred = self.predictor(x)
        else:
            with torch.autocast(x.device.type, dtype=predictor_dtype):
                pred = self.predictor(x)
        return (pred.float() - tgt).pow(2).mean(-1)


def policy_param_spec(net: PolicyNet) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor an actor needs, in a fixed order: the weights message's layout."""
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
