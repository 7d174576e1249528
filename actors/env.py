"""An ALE game as a gymnasium.Env, on ale_py.ALEInterface directly (no wrapper stack, for speed).

Machado et al. 2018 settings: sticky actions at the frame level (ALE's repeat_action_probability),
frame skip with the max over the last two frames, grayscale resized to 84x84 with INTER_AREA, a stack
of the newest frames, the full 18-action set, no life-loss episodes, and an episode cap that is a
*truncation* (``truncated=True``), not a game over.
Env-specific facts stay here: Montezuma's RAM holds the current room (byte 3), the player's x and
y (bytes 42 and 43) and the level (byte 57), as Go-Explore reads them. They travel as generic
episode stats: ``rooms`` (the rooms entered) and ``cells`` ([cell id, agent steps spent there] of
each exploration cell, ``common/cells.py``); games without known addresses have neither.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import gymnasium as gym
import numpy as np
from ale_py import ALEInterface, LoggerMode, roms

from common.cells import cell_id
from common.config import Config, rom_name


class RamLayout(NamedTuple):
    """RAM addresses of where the player is."""

    room: int
    x: int
    y: int
    level: int


# per game; games not listed report no rooms and no cells
RAM_LAYOUT = {"montezuma_revenge": RamLayout(room=3, x=42, y=43, level=57)}

# How a level's rooms (their RAM numbers) are laid out on screen, top row first: Montezuma's pyramid
# of 3, 5, 7 and 9 rooms, the start (room 1) at its top. Used to draw maps of where agents went.
ROOM_LAYOUT = {
    "montezuma_revenge": [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15, 16, 17, 18, 19, 20, 21, 22, 23]]
}

ALEInterface.setLoggerMode(LoggerMode.Error)


class AtariEnv(gym.Env):
    """Observation: uint8 [stack, H, W], newest frame last. Action: Discrete(18)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        game: str = "montezuma_revenge",
        max_episode_steps: int = 4500,
        sticky_prob: float = 0.25,
        frame_skip: int = 4,
        frame_stack: int = 4,
        height: int = 84,
        width: int = 84,
        seed: int = 0,
    ):
        self.game = game
        self.max_episode_steps = max_episode_steps
        self.frame_skip = frame_skip
        self.size = (width, height)
        self.ale = ALEInterface()
        self.ale.setInt("random_seed", int(seed) % (2**31))
        self.ale.setFloat("repeat_action_probability", float(sticky_prob))
        self.ale.setInt("frame_skip", 1)
        path = roms.get_rom_path(game)
        if path is None:
            raise ValueError(f"unknown ALE game {game!r}")
        self.ale.loadROM(str(path))
        self.action_set = list(self.ale.getLegalActionSet())  # the full 18 actions
        sh, sw = self.ale.getScreenDims()
        self._raw = np.zeros((2, sh, sw), dtype=np.uint8)
        self._max = np.zeros((sh, sw), dtype=np.uint8)
        self.stack = np.zeros((frame_stack, height, width), dtype=np.uint8)
        self.layout = RAM_LAYOUT.get(game)
        self.observation_space = gym.spaces.Box(0, 255, self.stack.shape, np.uint8)
        self.action_space: gym.spaces.Discrete = gym.spaces.Discrete(len(self.action_set))
        self._steps = 0
        self._return = 0.0
        self._rooms: set[int] = set()
        self._cells: dict[int, int] = {}  # cell id -> agent steps of this episode that ended there

    # -- gymnasium API ---------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.ale.setInt("random_seed", int(seed) % (2**31))
            self.ale.loadROM(str(roms.get_rom_path(self.game)))
        self.ale.reset_game()
        self._grab(0)
        self._raw[1] = self._raw[0]
        self.stack[:] = self._frame()
        self._steps, self._return = 0, 0.0
        self._rooms, self._cells = set(), {}
        return self.stack.copy(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, terminated, truncated = self.advance(action)
        info = self._info()
        if terminated or truncated:
            info["episode"] = self.episode_stats()
        return self.stack.copy(), reward, terminated, truncated, info

    def advance(self, action: int) -> tuple[float, bool, bool]:
        """One agent step that updates ``self.stack`` in place: the actor's copy-free ``step``."""
        reward = self._act(int(action))
        terminated = self.ale.game_over()
        self._steps += 1
        self._return += reward
        truncated = not terminated and self._steps >= self.max_episode_steps
        self.stack[:-1] = self.stack[1:]
        self.stack[-1] = self._frame()
        if self.layout is not None:
            self._note_position(self.layout)
        return reward, terminated, truncated

    def render(self) -> np.ndarray:
        """The full-resolution colour screen, uint8 [210, 160, 3]."""
        return self.ale.getScreenRGB()

    # -- internals -------------------------------------------------------
    def _act(self, a: int) -> float:
        """frame_skip emulator frames; screens of the last two are kept for the max."""
        ale, action, reward, skip = self.ale, self.action_set[a], 0.0, self.frame_skip
        for i in range(skip):
            reward += ale.act(action)
            if i >= skip - 2:
                self._grab(i - (skip - 2))
            if ale.game_over():
                if i < skip - 1:  # ended early: the newest screen stands for both
                    self._grab(1)
                    if i < skip - 2:
                        self._raw[0] = self._raw[1]
                break
        return reward

    def _grab(self, slot: int) -> None:
        self.ale.getScreenGrayscale(self._raw[slot])

    def _frame(self) -> np.ndarray:
        np.maximum(self._raw[0], self._raw[1], out=self._max)
        return cv2.resize(self._max, self.size, interpolation=cv2.INTER_AREA)

    def _note_position(self, lay: RamLayout) -> None:
        ram = self.ale.getRAM()
        self._rooms.add(int(ram[lay.room]))
        cid = cell_id(int(ram[lay.level]), int(ram[lay.room]), int(ram[lay.x]), int(ram[lay.y]))
        self._cells[cid] = self._cells.get(cid, 0) + 1

    def current_room(self) -> int | None:
        return None if self.layout is None else int(self.ale.getRAM()[self.layout.room])

    def _info(self) -> dict[str, Any]:
        room = self.current_room()
        if room is None:
            return {}
        self._rooms.add(room)  # reset() reaches here without advance()
        return {"room": room, "rooms": self._rooms}

    def episode_stats(self) -> dict[str, Any]:
        """Generic stats of the episode so far: return (raw score), length, and env-specific extras:
        ``rooms`` (sorted room numbers) and ``cells`` (sorted [cell id, steps] pairs; the steps add up
        to the length, as each agent step counts the cell it ended in)."""
        stats: dict[str, Any] = {"return": float(self._return), "length": int(self._steps)}
        if self.layout is not None:
            stats["rooms"] = sorted(self._rooms)
            stats["cells"] = [[c, n] for c, n in sorted(self._cells.items())]
        return stats


def make_env(cfg: Config, seed: int, sticky: bool | None = None) -> AtariEnv:
    """The training env of ``cfg``; ``sticky=False`` turns sticky actions off (eval --no-sticky)."""
    use_sticky = cfg.UseStickyAction if sticky is None else sticky
    return AtariEnv(
        game=rom_name(cfg.EnvName),
        max_episode_steps=cfg.MaxStepsPerEpisode,
        sticky_prob=cfg.StickyActionProb if use_sticky else 0.0,
        frame_skip=cfg.FrameSkip,
        frame_stack=cfg.FrameStack,
        height=cfg.ImageHeight,
        width=cfg.ImageWidth,
        seed=seed,
    )
