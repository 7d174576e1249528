"""The paper's networks (Burda et al. 2018, arXiv 1810.12894, appendix A.4 and the released code).

Policy: conv 32x8x8/4, 64x4x4/2, 64x3x3/1 (ReLU), fc 256, fc 448, then a residual fc 448 per head:
policy logits, extrinsic value, intrinsic value. RND target: the same convs (LeakyReLU), linear 512,
frozen. Predictor: the same convs (LeakyReLU), 512, 512, 512. Orthogonal init throughout.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


NUM_ACTIONS = 18  # the full ALE action set, for every game


class PolicyOutput(NamedTuple):
    logits: torch.Tensor  # [B, A]
    value_ext: torch.Tensor  # [B]
    value_int: torch.Tensor  # [B]


def _conv_stack(in_ch: int, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, 32, 8, stride=4), act(),
        nn.Conv2d(32, 64, 4, stride=2), act(),
        nn.Conv2d(64, 64, 3, stride=1), act(),
        nn.Flatten(),
    )


def _conv_out(h: int, w: int) -> int:
    for k, s in ((8, 4), (4, 2), (3, 1)):
        h, w = (h - k) // s + 1, (w - k) // s + 1
    return 64 * h * w


def _orthogonal_(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain)
            nn.init.zeros_(m.bias)


class PolicyNet(nn.Module):
    """obs uint8 [B, C, H, W] (stacked frames) -> PolicyOutput."""

    def __init__(self, num_actions: int, frame_stack: int = 4, height: int = 84, width: int = 84):
        super().__init__()
        self.trunk = nn.Sequential(_conv_stack(frame_stack, nn.ReLU), nn.Linear(_conv_out(height, width), 256),
                                   nn.ReLU(), nn.Linear(256, 448), nn.ReLU())
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

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> [B, 448]: the convs and the shared fully connected layers."""
        return self.trunk(obs.float().mul_(1.0 / 255.0))  # in place: one fewer [B, C, H, W] float tensor

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


class RNDTarget(nn.Module):
    """Normalised frame float [B, 1, H, W] -> random features [B, 512]. Never trained."""

    def __init__(self, height: int = 84, width: int = 84, out_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(_conv_stack(1, nn.LeakyReLU), nn.Linear(_conv_out(height, width), out_dim))
        _orthogonal_(self)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RNDPredictor(nn.Module):
    """Normalised frame float [B, 1, H, W] -> predicted features [B, 512]."""

    def __init__(self, height: int = 84, width: int = 84, out_dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(_conv_stack(1, nn.LeakyReLU), nn.Linear(_conv_out(height, width), 512), nn.ReLU(),
                                 nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, out_dim))
        _orthogonal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RNDModel(nn.Module):
    """Target + predictor; ``forward`` gives the per-sample squared error mean over features: [B]."""

    def __init__(self, height: int = 84, width: int = 84):
        super().__init__()
        self.target = RNDTarget(height, width)
        self.predictor = RNDPredictor(height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tgt = self.target(x)
        return (self.predictor(x) - tgt).pow(2).mean(-1)


def policy_param_spec(net: PolicyNet) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor an actor needs, in a fixed order: the weights message's layout."""
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
