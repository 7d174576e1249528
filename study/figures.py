"""The report's figures (matplotlib, Agg): curves against agent steps, room maps and position heat maps.

Each function draws from ``RunData`` grouped by configuration (label -> its seeds' runs) into one PNG.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from actors.env import ROOM_LAYOUT
from study.runs import RunData, cell_table, on_common_grid, room_totals

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

ROOM_MAPS_PER_ROW = 3  # a fourth configuration starts a new row: the maps stay large enough to read
ROOM_MAP_TITLE_CHARS = 44  # about a 4.2-inch map's width at 9 points
HEAT_MAP_TITLE_CHARS = 40  # about a 3.2-inch panel's width at 8 points

CURVES = [  # metric -> axis label; the report's three plots first
    ("ext_reward_per_rollout", "extrinsic reward per rollout (raw score per env)"),
    ("int_reward_per_rollout", "intrinsic reward per rollout (normalised)"),
    ("episode_return_mean", "episode return (last 100 episodes, all envs)"),
    ("rooms_visited_total", "rooms visited (run total)"),
    ("cells_visited_total", "cells visited (run total)"),
    ("episode_length_mean", "episode length (agent steps)"),
    ("entropy", "policy entropy (nats)"),
]


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend: the report is drawn without a display, on any machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(groups: dict[str, list[RunData]], key: str, ylabel: str, path: Path) -> bool:
    """Mean over seeds with a min-max band, one line per configuration. False if no run has the metric."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for label, runs in groups.items():
        got = on_common_grid(runs, key)
        if got is None:
            continue
        x, y = got
        (line,) = ax.plot(x, y.mean(0), label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})", lw=1.4)
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2, lw=0)
        drawn = True
    ax.set(xlabel="agent steps", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_room_maps(groups: dict[str, list[RunData]], layout: list[list[int]], path: Path) -> None:
    """``room_map_figure`` as a PNG."""
    plt = pyplot()
    fig = room_map_figure(groups, layout)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def room_map_figure(groups: dict[str, list[RunData]], layout: list[list[int]]) -> Figure:
    """The level's rooms as the game lays them out, shaded by agent steps spent there; one map per configuration,
    at most ``ROOM_MAPS_PER_ROW`` to a row, each titled by its configuration (wrapped) and one colour bar."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    totals = {label: room_totals(cell_table(runs)) for label, runs in groups.items()}
    peak = max([1] + [n for t in totals.values() for n in t.values()])
    norm, cmap = LogNorm(1, max(peak, 10)), plt.get_cmap("viridis")
    cols = min(len(groups), ROOM_MAPS_PER_ROW)
    rows = math.ceil(len(groups) / cols)
    # constrained layout keeps the (wrapped) titles and the colour bar clear of each other and of the maps
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 0.8, 2.6 * rows), squeeze=False, layout="constrained")
    fig.get_layout_engine().set(wspace=0.06)  # a gap between neighbouring maps, whose rooms run to the edge
    for ax in axes.flat:
        ax.axis("off")  # a last row with fewer configurations leaves blank panels
    for ax, (label, steps) in zip(axes.flat, totals.items(), strict=False):
        draw_room_map(ax, layout, steps, norm, cmap)
        ax.set_title(wrapped(label, ROOM_MAP_TITLE_CHARS), fontsize=9)
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=axes.ravel().tolist(),
        shrink=0.8,
        label="agent steps in the room\n(mean over seeds)",
    )
    return fig


def draw_room_map(ax: Axes, layout: list[list[int]], steps: dict[int, float], norm: Normalize, cmap: Colormap) -> None:
    """One configuration's map on ``ax``: a square per room (row r of ``layout`` centred under the one above),
    shaded by its agent steps, grey if never entered, labelled with the room number and steps."""
    from matplotlib.patches import Rectangle

    width = max(len(row) for row in layout)
    for r, row in enumerate(layout):
        for i, room in enumerate(row):
            x, n = (width - len(row)) / 2 + i, steps.get(room, 0)
            ax.add_patch(Rectangle((x, -r - 1), 0.95, 0.95, color=cmap(norm(n)) if n else "0.88"))
            ax.text(
                x + 0.47,
                -r - 0.53,
                f"{room}\n{n:,.0f}" if n else str(room),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if n and norm(n) < 0.6 else "black",
            )
    ax.set(xlim=(0, width), ylim=(-len(layout), 0))
    ax.set_aspect("equal")
    ax.axis("off")


def wrapped(label: str, chars: int) -> str:
    """A configuration label broken into lines of at most ``chars`` characters, at its ", " where it can."""
    return textwrap.fill(label, chars, break_on_hyphens=False)


def plot_heat_maps(groups: dict[str, list[RunData]], path: Path, rooms_each: int = 3) -> None:
    """Agent steps per position cell in each configuration's most visited rooms (x right, y up, RAM units)."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    from common.cells import CELL_BUCKET, bucket_count

    n = bucket_count()
    tables = {label: cell_table(runs) for label, runs in groups.items()}
    rooms_each = min(rooms_each, max(len(room_totals(t)) for t in tables.values()))
    every = [k for t in tables.values() for k in t]
    xlim = (max(0, min(k[1] for k in every) - 1) * CELL_BUCKET, min(n, max(k[1] for k in every) + 2) * CELL_BUCKET)
    ylim = (max(0, min(k[2] for k in every) - 1) * CELL_BUCKET, min(n, max(k[2] for k in every) + 2) * CELL_BUCKET)
    fig, axes = plt.subplots(len(groups), rooms_each, figsize=(3.2 * rooms_each, 2.9 * len(groups)), squeeze=False)
    for row, (label, cells) in zip(axes, tables.items(), strict=True):
        totals = room_totals(cells)
        top = sorted(totals, key=lambda k: -totals[k])[:rooms_each]
        for ax in row:
            ax.axis("off")
        for ax, room in zip(row, top, strict=False):  # a configuration may have seen fewer rooms than the row holds
            grid = np.zeros((n, n))
            for (rm, xb, yb), steps in cells.items():
                if rm == room:
                    grid[yb, xb] += steps
            ax.axis("on")
            im = ax.imshow(
                np.where(grid > 0, grid, np.nan),
                origin="lower",
                extent=(0, 256, 0, 256),
                norm=LogNorm(1, max(grid.max(), 10)),
                cmap="magma",
                aspect="auto",
            )
            ax.set(xlim=xlim, ylim=ylim)
            ax.set_title(f"{wrapped(label, HEAT_MAP_TITLE_CHARS)}\nroom {room}: {grid.sum():,.0f} steps", fontsize=8)
            ax.set_xlabel(f"x (RAM, {CELL_BUCKET}-unit cells)", fontsize=7)
            ax.set_ylabel("y (RAM)", fontsize=7)
            ax.tick_params(labelsize=6)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_figures(groups: dict[str, list[RunData]], out: Path) -> dict[str, str]:
    """Every figure the runs allow, into ``out``: figure key -> PNG file name (the maps need exploration cells
    of a game whose room layout is known)."""
    figures = {}
    for key, ylabel in CURVES:
        if plot_curves(groups, key, ylabel, out / f"curve_{key}.png"):
            figures[key] = f"curve_{key}.png"
    runs = [r for rs in groups.values() for r in rs]
    layout = ROOM_LAYOUT.get(runs[0].game)
    if layout is not None and any(r.exploration and r.exploration["cells"] for r in runs):
        plot_room_maps(groups, layout, out / "room_map.png")
        plot_heat_maps(groups, out / "heat_maps.png")
        figures.update(room_map="room_map.png", heat_maps="heat_maps.png")
    return figures
