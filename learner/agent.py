"""All learning state and the update step: RND intrinsic rewards, two-stream V-trace, PPO, predictor.

Burda et al. 2018 (arXiv 1810.12894): section 2.2 (RND reward), 2.3 (two value heads, combined
advantage), 2.4 (observation and reward normalisation); Espeholt et al. 2018 (arXiv 1802.01561) for
V-trace; Schulman et al. 2017 (arXiv 1707.06347) for the clipped surrogate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import nn

from common.config import Config
from common.precision import autocast
from common.rl.networks import PolicyNet, PolicyOutput, RNDModel
from common.rl.normalize import RewardForwardFilter, RunningMeanStd
from common.rl.ppo import clipped_surrogate
from common.rl.returns import extrinsic_stream, gae
from common.rl.vtrace import truncated_ratios, vtrace
from common.runtime import TorchRuntime, learner_runtime
from learner.batch import Batch
from learner.checkpoint import CheckpointError
from learner.minibatch import (
    LOSS_NAMES,
    MinibatchPlan,
    filter_groups,
    non_finite_message,
    plan_minibatches,
)


class Targets(NamedTuple):
    """Per-sample training targets, flattened time-major: index t * B + b."""

    advantages: torch.Tensor  # [N] combined, maybe standardised
    vs_ext: torch.Tensor  # [N]
    vs_int: torch.Tensor  # [N]
    logp_ref: torch.Tensor  # [N] the PPO ratio's reference: pi_0 (start of update) under V-trace, else mu


@dataclass
class BatchStats:
    ext_reward_per_rollout: float
    int_reward_per_rollout: float
    int_reward_raw_mean: float
    explained_var_ext: float
    explained_var_int: float
    reward_rms_std: float
    vtrace_rho_mean: float  # mean of min(rho_bar, pi_0/mu) over the batch: 1 when the actors' policy is pi_0


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var.item() == 0 else float(1 - (target - pred).var() / var)


class NonFiniteLoss(RuntimeError):
    """An update with a minibatch whose loss or gradient is not finite (a learning rate too high, say), on
    any learner rank. Checked once at the end of the update (one host sync, not one per minibatch): the
    update is then half-applied and is never published nor saved. One line names the losses."""


RANK_SEED_STRIDE = 1_000_003  # learner rank r draws minibatches from seed + 1 + this * r


class RankSync(Protocol):
    """What an agent needs of the other learner ranks of its run (``learner/distributed.py`` ``Dist``)."""

    rank: int
    world: int

    def gather_moments(self, rms: RunningMeanStd) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """Every rank's (mean, var, count), rank order; the same list on every rank."""
        ...

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over the ranks (float64), the same on every rank."""
        ...

    def flags(self, flag: bool) -> list[bool]:
        """Every rank's ``flag``, rank order."""
        ...


def moments(x: torch.Tensor, shape: tuple[int, ...]) -> RunningMeanStd:
    """The exact moments of ``x`` [N, *shape] (a normaliser with no prior count)."""
    m = RunningMeanStd(shape, epsilon=0.0, device=x.device)
    m.update(x)
    return m


def merge_ranks(rms: RunningMeanStd, parts: list[tuple[torch.Tensor, torch.Tensor, float]]) -> None:
    """Fold every rank's moments into ``rms`` in rank order: every rank computes the same bits."""
    for mean, var, count in parts:
        if count > 0:
            rms.update_from_moments(mean.to(rms.mean.device), var.to(rms.var.device), count)


class TrainStep(nn.Module):
    """The networks one minibatch's loss runs through, as one module: what DistributedDataParallel wraps
    when the run has several learner ranks, so that their gradients are averaged (bucketed, overlapped
    with the backward pass) before the clip and the optimizer step."""

    def __init__(self, agent: RNDAgent):
        super().__init__()
        self.policy, self.rnd = agent.policy, agent.rnd
        self._agent = [agent]  # a plain list: not a submodule, so DDP sees each parameter once

    def forward(self, obs: torch.Tensor, rnd_x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 obs [M, S, H, W] and normalised frames [k, 1, H, W] -> (logits [M, A], V_ext [M], V_int [M],
        the predictor's mean error on the k frames [])."""
        agent = self._agent[0]
        out = agent.run_policy(obs)
        err = agent.rnd_fn(rnd_x, agent.rnd_train_dtype)
        return out.logits, out.value_ext, out.value_int, err.mean()


class RNDAgent:
    """Policy, RND model, optimizer, observation normaliser, reward filter + its running std."""

    def __init__(
        self,
        cfg: Config,
        num_actions: int,
        device: torch.device | str = "cpu",
        runtime: TorchRuntime | None = None,
    ):
        """``runtime``: how the networks compute (``common/runtime.py``); by default the config's choices
        on ``device``, with nothing process-wide set."""
        self.cfg = cfg
        rt = runtime if runtime is not None else learner_runtime(cfg, device)
        self.device = rt.device
        torch.manual_seed(cfg.seed)
        self.policy = PolicyNet(num_actions, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).to(self.device)
        self.rnd = RNDModel(cfg.ImageHeight, cfg.ImageWidth).to(self.device)
        self.amp_dtype, self.rnd_train_dtype = rt.policy_dtype, rt.rnd_train_dtype
        self.policy_format, self.rnd_format = rt.policy_format, rt.rnd_format
        self.policy.to(memory_format=self.policy_format)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        self.rnd.to(memory_format=self.rnd_format)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        self.infer_chunk = rt.infer_chunk
        # compiled callables beside the plain modules, so state_dicts keep their plain keys
        self.features_fn = torch.compile(self.policy.features) if rt.compile else self.policy.features
        self.rnd_fn = torch.compile(self.rnd) if rt.compile else self.rnd
        params = list(self.policy.parameters()) + list(self.rnd.predictor.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.LearningRate)
        self.obs_rms = RunningMeanStd((cfg.ImageHeight, cfg.ImageWidth), device=self.device)
        self.reward_rms = RunningMeanStd(())
        self.reward_filter = RewardForwardFilter(cfg.NumWorkers, cfg.IntRewardDiscount, device=self.device)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.sync: RankSync | None = None
        self.train_step: nn.Module = TrainStep(self)

    def distribute(self, sync: RankSync) -> None:
        """Join the other learner ranks: statistics merged over ``sync``, gradients averaged by
        DistributedDataParallel (which also copies rank 0's parameters to every rank now). Each rank draws
        its minibatches from its own stream of ``seed + 1 + RANK_SEED_STRIDE * rank`` (rank 0: as alone)."""
        from torch.nn.parallel import DistributedDataParallel

        self.sync = sync
        self.gen.manual_seed(self.cfg.seed + 1 + RANK_SEED_STRIDE * sync.rank)
        ids = [self.device] if self.device.type == "cuda" else None
        # no buffers in these networks, so DDP's default buffer sync has nothing to send
        self.train_step = DistributedDataParallel(TrainStep(self), device_ids=ids, gradient_as_bucket_view=True)

    def run_policy(self, obs: torch.Tensor) -> PolicyOutput:
        """The policy on uint8 obs [M, S, H, W]: the convs and shared layers under bf16 autocast if
        configured, the heads in fp32 (bf16's 8-bit mantissa would blur values next to sparse rewards; on CUDA
        their matmul inputs are TF32, 10 bits, and sums and outputs stay fp32)."""
        with autocast(self.device, self.amp_dtype):
            x = self.features_fn(obs, self.amp_dtype or torch.float32, self.policy_format)
        return self.policy.heads(x.float())

    # ---- RND -----------------------------------------------------------------------------
    def normalise_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [M, H, W] -> float [M, 1, H, W], whitened per pixel and clipped (paper 2.4)."""
        mean = self.obs_rms.mean.float()
        std = self.obs_rms.std.float()
        x = (frames.float() - mean) / std
        x = x.clamp_(-self.cfg.obs_clip, self.cfg.obs_clip).unsqueeze(1)
        return x.contiguous(memory_format=self.rnd_format)

    @torch.no_grad()
    def intrinsic_rewards(self, batch: Batch) -> torch.Tensor:
        """Predictor error on the newest frame of each next observation, current predictor: [T, B]."""
        n = batch.T * batch.B
        out = torch.empty(n, device=self.device)
        for idx in self.chunks(n):
            out[idx] = self.rnd_fn(self.normalise_frames(batch.next_frames(idx)))
        return out.view(batch.T, batch.B)

    def chunks(self, n: int) -> list[torch.Tensor]:
        """Positions 0..n-1 as index tensors of at most ``infer_chunk`` each, in order: one no-grad pass each."""
        return list(torch.arange(n, device=self.device).split(self.infer_chunk))

    def normalise_intrinsic(self, raw: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Divide by the running std of per-stream discounted intrinsic returns (paper 2.4), merged over the
        learner ranks. The filter runs over column groups in arrival order (``filter_groups``: one group
        unless a batch holds a stream twice), so each stream's state advances in time order. raw [T, B]."""
        streams = batch.streams.tolist()
        returns = [
            self.reward_filter(raw[:, lo:hi], batch.streams[lo:hi])
            for lo, hi in filter_groups(streams, batch.segment_sizes)
        ]
        flat = torch.cat(returns, dim=1).reshape(-1)
        if self.sync is None:
            self.reward_rms.update(flat)
        else:
            merge_ranks(self.reward_rms, self.sync.gather_moments(moments(flat, ())))
        return raw / self.reward_rms.std.to(raw.device, raw.dtype)

    def update_obs_normaliser(self, frames: torch.Tensor) -> None:
        """frames uint8 [N, H, W] (any device): merged over the learner ranks."""
        frames = frames.to(self.device).reshape(-1, *self.obs_rms.mean.shape)
        if self.sync is None:
            self.obs_rms.update(frames)
        else:
            merge_ranks(self.obs_rms, self.sync.gather_moments(moments(frames, tuple(self.obs_rms.mean.shape))))

    def merge_warmup(self) -> None:
        """Make the observation normaliser every rank's warm-up at once: each rank warmed its own up from its
        own actors' frames; before the first update they merge (rank order), so every rank starts alike."""
        if self.sync is not None:
            parts = self.sync.gather_moments(self.obs_rms)
            self.obs_rms = RunningMeanStd(tuple(self.obs_rms.mean.shape), epsilon=0.0, device=self.device)
            merge_ranks(self.obs_rms, parts)

    # ---- targets ----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Current policy on every obs_0..obs_T: (target_logp [T, B], v_ext [T+1, B], v_int [T+1, B])."""
        n = (batch.T + 1) * batch.B
        logp = torch.empty(n, device=self.device)
        v_ext = torch.empty(n, device=self.device)
        v_int = torch.empty(n, device=self.device)
        actions = torch.cat([batch.actions.reshape(-1), torch.zeros(batch.B, dtype=torch.long, device=self.device)])
        for idx in self.chunks(n):
            out = self.run_policy(batch.obs(idx))
            logp[idx] = torch.log_softmax(out.logits, -1).gather(1, actions[idx, None]).squeeze(1)
            v_ext[idx], v_int[idx] = out.value_ext, out.value_int
        shape = (batch.T + 1, batch.B)
        return logp.view(shape)[:-1], v_ext.view(shape), v_int.view(shape)

    def stream_targets(self, behaviour_logp, target_logp, rewards, values, discounts, lam):
        """(vs [T, B], advantages [T, B]) of one stream, by V-trace or GAE per the config."""
        cfg = self.cfg
        if cfg.UseVTraceCorrection:
            vt = vtrace(
                behaviour_logp,
                target_logp,
                rewards,
                values[:-1],
                values[-1],
                discounts,
                rho_bar=cfg.vtrace_rho_bar,
                c_bar=cfg.vtrace_c_bar,
                lam=lam,
                advantage=cfg.vtrace_advantage,
            )
            return vt.vs, vt.pg_advantages
        adv, ret = gae(rewards, values[:-1], values[-1], discounts, lam)
        return ret, adv

    def compute_targets(self, batch: Batch) -> tuple[Targets, BatchStats]:
        """Everything computed once per batch before the PPO epochs."""
        cfg = self.cfg
        target_logp, v_ext, v_int = self.score(batch)
        raw_int = self.intrinsic_rewards(batch)
        int_rew = self.normalise_intrinsic(raw_int, batch).to(self.device)
        self.update_obs_normaliser(batch.frames[-batch.T :])

        ext_rew, ext_disc = extrinsic_stream(
            batch.rewards, batch.terminated, batch.truncated, batch.trunc_value, cfg.ExtRewardDiscount
        )
        int_disc = torch.full_like(int_rew, cfg.IntRewardDiscount)  # never cut (non-episodic)

        vs_ext, adv_ext = self.stream_targets(
            batch.behaviour_logp, target_logp, ext_rew, v_ext, ext_disc, cfg.PPOAdvLambda
        )
        vs_int, adv_int = self.stream_targets(
            batch.behaviour_logp, target_logp, int_rew, v_int, int_disc, cfg.PPOAdvLambda
        )
        adv = cfg.ExtCoeff * adv_ext + cfg.IntCoeff * adv_int
        if cfg.normalize_advantages:
            adv = self.standardise(adv)
        # V-trace's advantages carry rho = min(rho_bar, pi_0/mu): the ratio is then taken against pi_0,
        # not mu, or each sample would be importance-weighted twice (common/rl/ppo.py)
        logp_ref = target_logp if cfg.UseVTraceCorrection else batch.behaviour_logp
        stats = BatchStats(
            ext_reward_per_rollout=float(batch.rewards.sum() / batch.B),
            int_reward_per_rollout=float(int_rew.sum() / batch.B),
            int_reward_raw_mean=float(raw_int.mean()),
            explained_var_ext=explained_variance(v_ext[:-1], vs_ext),
            explained_var_int=explained_variance(v_int[:-1], vs_int),
            reward_rms_std=float(self.reward_rms.std),
            vtrace_rho_mean=float(truncated_ratios(batch.behaviour_logp, target_logp, cfg.vtrace_rho_bar).mean()),
        )
        return Targets(adv.reshape(-1), vs_ext.reshape(-1), vs_int.reshape(-1), logp_ref.reshape(-1)), stats

    def standardise(self, adv: torch.Tensor) -> torch.Tensor:
        """(adv - mean) / (std + 1e-8), the mean and (unbiased) std over every rank's batch."""
        if self.sync is None:
            return (adv - adv.mean()) / (adv.std() + 1e-8)
        a = adv.double()
        n, s1, s2 = self.sync.sum(torch.stack([torch.tensor(float(a.numel())), a.sum().cpu(), a.pow(2).sum().cpu()]))
        mean = s1 / n
        std = ((s2 - n * mean * mean) / max(float(n) - 1.0, 1.0)).clamp(min=0.0).sqrt()
        return (adv - mean.to(adv)) / (std.to(adv) + 1e-8)

    # ---- the update -------------------------------------------------------------------------
    def minibatch_loss(
        self, batch: Batch, idx: torch.Tensor, tg: Targets, sub: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO clipped surrogate (ratio against ``tg.logp_ref``) + both value losses - entropy + RND
        predictor loss, on one minibatch of flat sample positions ``idx`` [M], the predictor trained on the
        next frames of ``idx[sub]`` (``sub`` long [k], positions within the minibatch; by default drawn from
        ``gen`` as ``predictor_loss`` draws it)."""
        cfg = self.cfg
        if sub is None:
            sub = self.predictor_subset(idx.shape[0]).to(idx.device)
        rnd_x = self.normalise_frames(batch.next_frames(idx[sub]))
        logits, value_ext, value_int, rnd_loss = self.train_step(batch.obs(idx), rnd_x)
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(1, batch.actions.reshape(-1)[idx, None]).squeeze(1)
        pg_loss, ratio, log_ratio = clipped_surrogate(logp, tg.logp_ref[idx], tg.advantages[idx], cfg.PPORewardEps)
        v_loss = 0.5 * ((value_ext - tg.vs_ext[idx]).pow(2).mean() + (value_int - tg.vs_int[idx]).pow(2).mean())
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        loss = pg_loss + cfg.value_coeff * v_loss - cfg.PPOEntropyCoeff * entropy + rnd_loss
        with torch.no_grad():
            info = {
                "policy_loss": pg_loss.detach(),
                "value_loss": v_loss.detach(),
                "entropy": entropy.detach(),
                "rnd_loss": rnd_loss.detach(),
                "approx_kl": ((ratio - 1) - log_ratio).mean(),
                "clip_fraction": ((ratio - 1).abs() > cfg.PPORewardEps).float().mean(),
            }
        return loss, info

    def predictor_loss(self, batch: Batch, idx: torch.Tensor, sub: torch.Tensor | None = None) -> torch.Tensor:
        """RND's predictor loss on minibatch ``idx`` [M]: the mean error on the next frames of ``idx[sub]``
        (default: a fixed-size subset drawn from ``gen``, ``predictor_count`` of the M). Only those go
        through the predictor; the others' gradient would be zero."""
        if sub is None:
            sub = self.predictor_subset(idx.shape[0])
        x = self.normalise_frames(batch.next_frames(idx[sub.to(idx.device)]))
        return self.rnd_fn(x, self.rnd_train_dtype).mean()

    def predictor_subset(self, m: int) -> torch.Tensor:
        """A fixed-size predictor subset of an m-sample minibatch, drawn from ``gen``: long [k] positions."""
        return plan_minibatches(m, 1, 1, self.cfg.RNDUpdateProportion, self.gen).predictor[0]

    def update(self, batch: Batch, plan: MinibatchPlan | None = None) -> dict[str, float]:
        """One learner update on ``batch``: targets once, then EpochSteps epochs of shuffled minibatches
        (``plan``, by default drawn from ``gen``). Raises NonFiniteLoss, on every rank alike, when a loss or
        gradient of any rank's update was not finite."""
        cfg = self.cfg
        tg, stats = self.compute_targets(batch)
        if plan is None:
            n = batch.T * batch.B
            plan = plan_minibatches(
                n, max(1, round(n / cfg.BatchSize)), cfg.EpochSteps, cfg.RNDUpdateProportion, self.gen
            )
        steps = len(plan.samples)
        losses = torch.empty(steps, 1 + len(LOSS_NAMES), device=self.device)
        norms = torch.empty(steps, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for j, (idx, sub) in enumerate(zip(plan.samples, plan.predictor, strict=True)):
            idx, sub = idx.to(self.device, non_blocking=True), sub.to(self.device, non_blocking=True)
            loss, info = self.minibatch_loss(batch, idx, tg, sub)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms[j] = torch.nn.utils.clip_grad_norm_(params, cfg.ClipGradNorm).detach()
            losses[j] = torch.stack([loss.detach(), *(info[k] for k in LOSS_NAMES)])
            self.optimizer.step()
            for k, v in info.items():
                sums[k] = sums.get(k, 0.0) + v
        self.check_finite(losses, norms)
        metrics = {k: float(v) / steps for k, v in sums.items()}
        metrics["grad_norm"] = float(norms.mean())
        metrics.update(vars(stats))
        return metrics

    def check_finite(self, losses: torch.Tensor, norms: torch.Tensor) -> None:
        """One host sync per update (one all-gather with several ranks): raise NonFiniteLoss if any step's
        loss or gradient norm was not finite on any rank. A NaN that were published would be in every
        later update and every actor's weights."""
        ok = bool(torch.isfinite(losses).all() & torch.isfinite(norms).all())
        bad = [not ok] if self.sync is None else [not f for f in self.sync.flags(ok)]
        if not any(bad):
            return
        if not ok:
            raise NonFiniteLoss(non_finite_message(losses.cpu(), norms.cpu()))
        ranks = ", ".join(str(r) for r, b in enumerate(bad) if b)
        raise NonFiniteLoss(f"non-finite loss on learner rank {ranks}")

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "rnd": self.rnd.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_rms": self.obs_rms.state_dict(),
            "reward_rms": self.reward_rms.state_dict(),
            "reward_filter": self.reward_filter.state_dict(),
            "rng": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Raises CheckpointError when the saved networks do not fit this code's (e.g. another conv shape)."""
        load_network(self.policy, state["policy"], "policy")
        load_network(self.rnd, state["rnd"], "RND")
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.reward_rms.load_state_dict(state["reward_rms"])
        self.reward_filter.load_state_dict(state["reward_filter"])
        self.gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])


def load_network(net: torch.nn.Module, state: dict, what: str) -> None:
    """``net.load_state_dict(state)`` after checking that ``state`` holds exactly ``net``'s tensors with
    their shapes; a mismatch raises one CheckpointError line naming the first tensor that differs."""
    want = net.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"the checkpoint's {what} network is a {type(state).__name__}, not a state dict")
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"the checkpoint's {what} network does not fit this code's: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for k, v in want.items():
        got = state[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape:
            shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(
                f"the checkpoint's {what} network does not fit this code's: {k} is {shape} there, {list(v.shape)} here"
            )
    net.load_state_dict(state)
