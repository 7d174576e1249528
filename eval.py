#!/usr/bin/env python3
"""Play a checkpoint: per-episode return, length and rooms, an MP4 (and GIF) of the colour screen, a JSON summary.

  python eval.py runs/montezuma-.../checkpoints/latest.pt --episodes 5 --video play.mp4 --json eval.json
  python eval.py runs/mr1 --episodes 5 --best-gif best.gif --int-trace int_trace.png

``--int-trace`` plots the RND intrinsic reward of each step of the first episode, computed with the
checkpoint's predictor, observation normaliser and reward scale as the learner computes it, with
the frames at its highest peaks below (after Burda et al. 2018, Figure 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from actors.rollout import sample_actions
from common.config import ConfigError, from_dict
from learner.checkpoint import CheckpointError, load_checkpoint

VIDEO_FPS = 15  # 60 Hz emulator / frame skip 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file, or a run dir (uses checkpoints/latest.pt)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, help="episode cap in agent steps (default: the config's)")
    p.add_argument("--video", help="write an MP4 of the full-resolution colour screen")
    p.add_argument("--gif", help="also write a GIF (every 2nd frame, to keep it small)")
    p.add_argument("--best-gif", help="write a GIF of the episode with the highest return (the first of ties)")
    p.add_argument("--int-trace", help="write a PNG of the first episode's intrinsic reward per step")
    p.add_argument("--json", help="write a JSON summary here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sticky", action="store_true", help="turn sticky actions off (on by default, as in training)")
    p.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    return p.parse_args(argv)


class VideoSink:
    """Collects RGB frames [210, 160, 3]; writes MP4 (OpenCV) and GIF (Pillow) at the end."""

    def __init__(self, mp4: str | None, gif: str | None):
        self.mp4, self.gif = mp4, gif
        self.frames: list[np.ndarray] = []

    def add(self, rgb: np.ndarray) -> None:
        if self.mp4 or self.gif:
            self.frames.append(rgb.copy())

    def write(self) -> None:
        if not self.frames:
            return
        if self.mp4:
            import cv2

            h, w = self.frames[0].shape[:2]
            out = cv2.VideoWriter(self.mp4, cv2.VideoWriter.fourcc(*"mp4v"), VIDEO_FPS, (w * 2, h * 2))
            if not out.isOpened():
                raise OSError(f"cannot open {self.mp4} for writing an MP4")
            for f in self.frames:
                out.write(cv2.resize(f[:, :, ::-1], (w * 2, h * 2), interpolation=cv2.INTER_NEAREST))
            out.release()
        if self.gif:
            write_gif(self.gif, self.frames[::2], 2)


class BestEpisodeGif:
    """Keeps every 2nd screen of the current episode and of the best one so far; writes the best as a GIF."""

    def __init__(self, path: str | None):
        self.path, self.best_return = path, -float("inf")
        self.frames: list[np.ndarray] = []
        self.best: list[np.ndarray] = []
        self._seen = 0

    def add(self, rgb: np.ndarray) -> None:
        if self.path and self._seen % 2 == 0:  # the GIF shows every 2nd screen: keep no others
            self.frames.append(rgb.copy())
        self._seen += 1

    def end_episode(self, ret: float) -> None:
        if self.path and ret > self.best_return:
            self.best, self.best_return = self.frames, ret
        self.frames, self._seen = [], 0

    def write(self) -> None:
        if self.path and self.best:
            write_gif(self.path, self.best, 2)


def write_gif(path: str, frames: list[np.ndarray], stride: int) -> None:
    from PIL import Image

    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 * stride / VIDEO_FPS), loop=0)


class IntrinsicTrace:
    """The RND intrinsic reward of each step: predictor error on the step's new frame, normalised as in
    training (the checkpoint's observation normaliser, clip, and running std of intrinsic returns)."""

    def __init__(self, cfg, agent_state: dict):
        from common.rl.networks import NUM_ACTIONS
        from learner.agent import RNDAgent

        rng = torch.get_rng_state()
        self.agent = RNDAgent(cfg, NUM_ACTIONS, "cpu")
        self.agent.load_state_dict(agent_state)
        torch.set_rng_state(rng)  # loading restores the run's global RNG; eval samples with its own generator
        self.rewards: list[float] = []
        self.screens: list[np.ndarray] = []

    @torch.no_grad()
    def add(self, frame: np.ndarray, rgb: np.ndarray) -> None:
        """frame: the newest uint8 [H, W] observation frame; rgb: the screen [210, 160, 3] beside it."""
        x = self.agent.normalise_frames(torch.from_numpy(frame.copy())[None])
        self.rewards.append(float(self.agent.rnd(x)[0]) / float(self.agent.reward_rms.std))
        self.screens.append(rgb[::2, ::2].copy())  # half size is enough for a thumbnail


def peak_steps(values: list[float], k: int, min_gap: int) -> list[int]:
    """Indices of the ``k`` highest values at least ``min_gap`` steps apart, highest first."""
    chosen: list[int] = []
    for i in np.argsort(values)[::-1]:
        if all(abs(int(i) - j) >= min_gap for j in chosen):
            chosen.append(int(i))
        if len(chosen) == k:
            break
    return chosen


def plot_int_trace(trace: IntrinsicTrace, path: str, title: str, peaks: int = 4) -> list[int]:
    """Trace over steps, the ``peaks`` highest marked, their screens below. Returns the peak steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = trace.rewards
    top = sorted(peak_steps(r, peaks, max(1, len(r) // (4 * peaks))))
    fig = plt.figure(figsize=(10, 5.2))
    grid = fig.add_gridspec(2, max(1, len(top)), height_ratios=[1.2, 1])
    ax = fig.add_subplot(grid[0, :])
    ax.plot(np.arange(1, len(r) + 1), r, lw=0.8, color="tab:blue")
    for n, i in enumerate(top):
        ax.annotate(str(n + 1), (i + 1, r[i]), textcoords="offset points", xytext=(0, 4), ha="center", color="tab:red")
        ax.plot(i + 1, r[i], "o", color="tab:red", ms=4)
    ax.set(xlabel="agent step of the episode", ylabel="intrinsic reward (normalised)", title=title)
    for n, i in enumerate(top):
        sub = fig.add_subplot(grid[1, n])
        sub.imshow(trace.screens[i])
        sub.set_title(f"{n + 1}: step {i + 1}, {r[i]:.3g}", fontsize=8)
        sub.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [i + 1 for i in top]


def play_episode(env, policy, gen: torch.Generator, greedy: bool, video: VideoSink, on_step=None) -> dict:
    """One episode; ``on_step(frame, rgb)`` sees each step's new observation frame and screen."""
    env.reset()
    video.add(env.render())
    while True:
        if greedy:
            with torch.inference_mode():
                a = int(policy(torch.from_numpy(env.stack[None])).logits[0].argmax())
        else:
            a = int(sample_actions(policy, env.stack[None], gen)[0][0])  # the actors' own sampling
        _, terminated, truncated = env.advance(a)
        rgb = env.render()
        video.add(rgb)
        if on_step is not None:
            on_step(env.stack[-1], rgb)
        if terminated or truncated:
            return {**env.episode_stats(), "terminated": bool(terminated), "truncated": bool(truncated)}


def play_all(args: argparse.Namespace, cfg, data: dict, policy) -> dict:
    """Play ``args.episodes`` episodes, print a line each, write the videos and the trace; the summary."""
    from actors.env import make_env

    env = make_env(cfg, seed=args.seed, sticky=not args.no_sticky)
    env.reset(seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    video, best = VideoSink(args.video, args.gif), BestEpisodeGif(args.best_gif)
    trace = IntrinsicTrace(cfg, data["agent"]) if args.int_trace else None
    update, steps = data["counters"]["update"], data["counters"]["agent_steps"]
    episodes = []
    for i in range(args.episodes):

        def on_step(frame, rgb, first=i == 0):
            best.add(rgb)
            if trace is not None and first:
                trace.add(frame, rgb)

        ep = play_episode(env, policy, gen, args.greedy, video, on_step)
        best.end_episode(ep["return"])
        episodes.append(ep)
        rooms = ep.get("rooms")
        print(
            f"episode {i + 1}: checkpoint update {update}, agent step {steps:,} | return {ep['return']:.0f} | "
            f"length {ep['length']}" + (f" | rooms {rooms}" if rooms is not None else ""),
            flush=True,
        )
    video.write()
    best.write()
    summary = {
        "checkpoint": str(args.checkpoint),
        "update": update,
        "agent_steps": steps,
        "sticky": not args.no_sticky,
        "greedy": args.greedy,
        "seed": args.seed,
        "episodes": episodes,
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "return_max": float(np.max([e["return"] for e in episodes])),
        "length_mean": float(np.mean([e["length"] for e in episodes])),
    }
    if any("rooms" in e for e in episodes):
        summary["rooms_visited"] = sorted(set().union(*(e.get("rooms", []) for e in episodes)))
    if trace is not None:
        title = f"intrinsic reward, episode 1 (update {update}, agent step {steps:,})"
        summary["int_trace"] = {"rewards": trace.rewards, "peaks": plot_int_trace(trace, args.int_trace, title)}
    print(
        f"mean return {summary['return_mean']:.1f} over {len(episodes)} episodes"
        + (f"; rooms visited {summary['rooms_visited']}" if "rooms_visited" in summary else "")
    )
    return summary


def check_outputs(args: argparse.Namespace) -> str | None:
    """Why an output path can't be written (its folder is missing or takes no files, say on a read-only
    filesystem; the path is a folder), checked before any episode is played."""
    for flag in ("video", "gif", "best_gif", "int_trace", "json"):
        path = getattr(args, flag)
        if not path:
            continue
        folder, name = Path(path).resolve().parent, f"--{flag.replace('_', '-')} {path}"
        if not folder.is_dir():
            return f"{name}: folder {folder} does not exist"
        if Path(path).is_dir():
            return f"{name}: is a folder"
        try:
            tempfile.TemporaryFile(dir=folder).close()  # a file made and gone: nothing is left behind
        except OSError as e:
            return f"{name}: cannot write in folder {folder} ({e.strerror})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.episodes < 1 or (args.max_steps is not None and args.max_steps < 1):
        print("eval: error: --episodes and --max-steps must be >= 1", file=sys.stderr)
        return 2
    bad_output = check_outputs(args)
    if bad_output:
        print(f"eval: error: {bad_output}", file=sys.stderr)
        return 2
    try:
        data = load_checkpoint(args.checkpoint)
        overrides = {"MaxStepsPerEpisode": args.max_steps} if args.max_steps is not None else {}
        cfg = from_dict({**data["config"], **overrides})
    except (CheckpointError, ConfigError) as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    from common.rl.networks import NUM_ACTIONS, PolicyNet
    from learner.agent import load_network

    torch.set_num_threads(1)
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval()
    try:
        load_network(policy, data["agent"]["policy"], "policy")
    except CheckpointError as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    try:
        summary = play_all(args, cfg, data, policy)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
    except OSError as e:  # checked before playing; a disk may still fill up
        why = f"{e.filename}: {e.strerror}" if e.filename else str(e)
        print(f"eval: error: cannot write the outputs: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
