"""study/figures.py: the room map stays readable with long configuration names."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from test_study_fakes import is_png, synthetic_run

from actors.env import ROOM_LAYOUT
from study.figures import plot_room_maps, pyplot, room_map_figure, wrapped
from study.runs import group_runs, load_study

LONG_ARMS = [
    {"ExtCoeff": "2", "IntCoeff": "1", "normalize_advantages": "true"},
    {"ExtCoeff": "0", "IntCoeff": "1", "normalize_advantages": "true"},
    {"ExtCoeff": "2", "IntCoeff": "0", "normalize_advantages": "false"},
]


def long_named_groups(root: Path, arms: list[dict]) -> dict:
    rng = np.random.default_rng(0)
    for i, values in enumerate(arms):
        synthetic_run(root, f"arm{i}_seed0", values, 0, rng, None)
    return group_runs(load_study(root))


def overlapping(boxes: list) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


def test_room_map_titles_clear_each_other_and_the_colour_bar(tmp_path: Path):
    """Three long-named configurations side by side, and a fourth on a second row: no title overlaps another
    title, a map or the colour bar (as drawn, in display units)."""
    for arms in (LONG_ARMS, LONG_ARMS + [{"EnvName": "MontezumaRevengeNoFrameskip-v4_" + "x" * 60}]):
        groups = long_named_groups(tmp_path / str(len(arms)), arms)
        plt = pyplot()
        fig = room_map_figure(groups, ROOM_LAYOUT["montezuma_revenge"])
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        maps = [ax for ax in fig.axes if ax.get_title()]
        bar = [ax for ax in fig.axes if "agent steps" in ax.get_ylabel()]
        assert len(maps) == len(arms) and len(bar) == 1
        titles = [ax.title.get_window_extent(renderer) for ax in maps]
        assert overlapping(titles) == []
        bar_box = bar[0].get_tightbbox(renderer)  # the bar with its ticks and label
        assert not any(t.overlaps(bar_box) for t in titles)
        assert not any(t.overlaps(ax.get_window_extent(renderer)) for t in titles for ax in maps)
        assert all(t.x0 >= 0 and t.x1 <= fig.bbox.width for t in titles)  # inside the figure, not cut off
        plt.close(fig)
    plot_room_maps(groups, ROOM_LAYOUT["montezuma_revenge"], tmp_path / "room_map.png")
    assert is_png(tmp_path / "room_map.png")


def test_labels_wrap_at_their_commas():
    label = "ExtCoeff=2, IntCoeff=1, normalize_advantages=true"
    assert wrapped(label, 44) == "ExtCoeff=2, IntCoeff=1,\nnormalize_advantages=true"
    assert wrapped("ExtCoeff=2", 44) == "ExtCoeff=2"
    assert all(len(line) <= 10 for line in wrapped("x" * 25, 10).splitlines())
