"""What the learner's I/O thread spends on the costliest segment a peer can send: every stream of the
config ends an episode of MAX_EPISODE_CELLS exploration cells. Times reading its header
(``read_envelope``) plus decoding and validating it whole (``parse_message``), and prints the
header's size. Runs at any commit since episode records had cells: where ``common/episodes.py`` is
missing, the records go into the JSON header as they did then.

    PYTHONPATH=$PWD python3 scripts/profile/header_cost.py [--config configs/smoke.yaml] [--n 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import wire
from common.cells import MAX_EPISODE_CELLS, cell_id
from common.config import load_config
from common.rl.networks import NUM_ACTIONS
from common.wire import SegmentSpec, encode
from learner.learner_io import parse_message, read_envelope


def costly_frames(spec: SegmentSpec) -> list[bytes]:
    """A valid segment of every stream, each ending at its own step an episode of MAX_EPISODE_CELLS cells."""
    k = spec.num_streams
    arrays = {n: np.full(s, -1.0 if n == "behaviour_logp" else 0, d) for n, (d, s) in spec.segment_arrays(k).items()}
    places = [(lv, r, x, y) for lv in range(4) for r in range(2) for x in range(32) for y in range(16)]
    cells = sorted(cell_id(lv, r, 8 * x, 8 * y) for lv, r, x, y in places)[:MAX_EPISODE_CELLS]
    records = []
    for s in range(k):
        arrays["terminated"][s, s] = 1
        records.append(
            {"stream": s, "t": s, "return": 0.0, "length": MAX_EPISODE_CELLS, "cells": [[c, 1] for c in cells]}
        )
    meta = {"actor": 0, "streams": list(range(k)), "num_actors": 1, "version": 0, "run": 0, "seq": 0}
    if not hasattr(wire, "check_episode_arrays"):  # a commit whose records were JSON in the header
        return encode("segment", {**meta, "episodes": records}, arrays, "zstd")
    from common.episodes import episode_arrays

    return encode("segment", meta, {**arrays, **episode_arrays(records)}, "zstd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/smoke.yaml")
    p.add_argument("--n", type=int, default=20, help="messages timed")
    a = p.parse_args()
    spec = SegmentSpec.from_config(load_config(a.config), NUM_ACTIONS)
    frames = costly_frames(spec)
    t = time.perf_counter()
    for _ in range(a.n):
        read_envelope(frames, spec)
        parse_message(frames, spec)
    ms = (time.perf_counter() - t) / a.n * 1000
    cells = f"{spec.num_streams} streams x {MAX_EPISODE_CELLS} cells"
    print(f"header {len(frames[0]):,} bytes, {cells}: {ms:.2f} ms a message")


if __name__ == "__main__":
    main()
