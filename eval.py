#!/usr/bin/env python3
"""Play a checkpoint: per-episode return, length and rooms, an MP4 (and GIF) of the colour screen, a JSON summary.

  python eval.py runs/montezuma-.../checkpoints/latest.pt --episodes 5 --video play.mp4 --json eval.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from actors.rollout import sample_actions  # noqa: E402
from common.config import ConfigError, from_dict  # noqa: E402
from learner.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

VIDEO_FPS = 15  # 60 Hz emulator / frame skip 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file, or a run dir (uses checkpoints/latest.pt)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, help="episode cap in agent steps (default: the config's)")
    p.add_argument("--video", help="write an MP4 of the full-resolution colour screen")
    p.add_argument("--gif", help="also write a GIF (every 2nd frame, to keep it small)")
    p.add_argument("--json", help="write a JSON summary here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sticky", action="store_true", help="turn sticky actions off (on by default, as in training)")
    p.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    return p.parse_args(argv)


class VideoSink:
    """Collects RGB frames [210, 160, 3]; writes MP4 (OpenCV) and GIF (Pillow) at the end."""

    def __init__(self, mp4: str | None, gif: str | None):
        self.mp4, self.gif, self.frames = mp4, gif, []

    def add(self, rgb: np.ndarray) -> None:
        if self.mp4 or self.gif:
            self.frames.append(rgb.copy())

    def write(self) -> None:
        if not self.frames:
            return
        if self.mp4:
            import cv2

            h, w = self.frames[0].shape[:2]
            out = cv2.VideoWriter(self.mp4, cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (w * 2, h * 2))
            if not out.isOpened():
                raise OSError(f"cannot open {self.mp4} for writing an MP4")
            for f in self.frames:
                out.write(cv2.resize(f[:, :, ::-1], (w * 2, h * 2), interpolation=cv2.INTER_NEAREST))
            out.release()
        if self.gif:
            from PIL import Image

            imgs = [Image.fromarray(f) for f in self.frames[::2]]
            imgs[0].save(self.gif, save_all=True, append_images=imgs[1:], duration=int(2000 / VIDEO_FPS), loop=0)


def play_episode(env, policy, gen: torch.Generator, greedy: bool, video: VideoSink) -> dict:
    env.reset()
    video.add(env.render())
    while True:
        if greedy:
            with torch.inference_mode():
                a = int(policy(torch.from_numpy(env.stack[None])).logits[0].argmax())
        else:
            a = int(sample_actions(policy, env.stack[None], gen)[0][0])  # the actors' own sampling
        _, terminated, truncated = env.advance(a)
        video.add(env.render())
        if terminated or truncated:
            return {**env.episode_stats(), "terminated": bool(terminated), "truncated": bool(truncated)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.episodes < 1 or (args.max_steps is not None and args.max_steps < 1):
        print("eval: error: --episodes and --max-steps must be >= 1", file=sys.stderr)
        return 2
    try:
        data = load_checkpoint(args.checkpoint)
        overrides = {"MaxStepsPerEpisode": args.max_steps} if args.max_steps is not None else {}
        cfg = from_dict({**data["config"], **overrides})
    except (CheckpointError, ConfigError) as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    from actors.env import make_env
    from common.networks import NUM_ACTIONS, PolicyNet
    from learner.agent import load_network

    torch.set_num_threads(1)
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval()
    try:
        load_network(policy, data["agent"]["policy"], "policy")
    except CheckpointError as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    env = make_env(cfg, seed=args.seed, sticky=not args.no_sticky)
    env.reset(seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    video = VideoSink(args.video, args.gif)
    update, steps = data["counters"]["update"], data["counters"]["agent_steps"]
    episodes = []
    for i in range(args.episodes):
        ep = play_episode(env, policy, gen, args.greedy, video)
        episodes.append(ep)
        rooms = ep.get("rooms")
        print(f"episode {i + 1}: checkpoint update {update}, agent step {steps:,} | return {ep['return']:.0f} | "
              f"length {ep['length']}" + (f" | rooms {rooms}" if rooms is not None else ""), flush=True)
    video.write()
    summary = {
        "checkpoint": str(args.checkpoint), "update": update, "agent_steps": steps, "sticky": not args.no_sticky,
        "greedy": args.greedy, "seed": args.seed, "episodes": episodes,
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "return_max": float(np.max([e["return"] for e in episodes])),
        "length_mean": float(np.mean([e["length"] for e in episodes])),
    }
    if any("rooms" in e for e in episodes):
        summary["rooms_visited"] = sorted(set().union(*(e.get("rooms", []) for e in episodes)))
    print(f"mean return {summary['return_mean']:.1f} over {len(episodes)} episodes"
          + (f"; rooms visited {summary['rooms_visited']}" if "rooms_visited" in summary else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
