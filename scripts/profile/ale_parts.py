"""Where the bare emulator step (bench.py's ale_steps_per_s_per_core loop) spends its CPU time: the same
loop run cumulatively (4 `act` calls only; + the two grayscale grabs; + the max of the two; + the INTER_AREA
resize to 84x84), in 5 alternating rounds of 2,000 agent steps each, process CPU microseconds per step
(medians). Then the resize alone: cv2 against an exact NumPy re-implementation of its area weights.

  python scripts/profile/ale_parts.py
"""

import math
import time

import cv2
import numpy as np
from ale_py import ALEInterface, LoggerMode, roms

ALEInterface.setLoggerMode(LoggerMode.Error)
ale = ALEInterface()
ale.setFloat("repeat_action_probability", 0.25)
ale.loadROM(str(roms.get_rom_path("montezuma_revenge")))
acts = ale.getLegalActionSet()
h, w = ale.getScreenDims()
raw = np.zeros((2, h, w), np.uint8)
mx = np.zeros((h, w), np.uint8)
A = [acts[i] for i in np.random.default_rng(0).integers(len(acts), size=2000)]


def loop(mode, n=2000):
    c0 = time.process_time()
    for k in range(n):
        for i in range(4):
            ale.act(A[k])
            if mode >= 1 and i >= 2:
                ale.getScreenGrayscale(raw[i - 2])
        if mode >= 2:
            np.maximum(raw[0], raw[1], out=mx)
        if mode >= 3:
            cv2.resize(mx, (84, 84), interpolation=cv2.INTER_AREA)
        if ale.game_over():
            ale.reset_game()
    return (time.process_time() - c0) / n * 1e6


res = {m: [] for m in range(4)}
for _ in range(5):
    for m in range(4):
        res[m].append(loop(m))
med = [float(np.median(res[m])) for m in range(4)]
print(
    f"CPU us per agent step, cumulative: act x4 {med[0]:.0f} | + grabs {med[1]:.0f} | + max {med[2]:.0f} | "
    f"+ resize {med[3]:.0f}"
)
print(f"resize share of the full step: {100 * (med[3] - med[2]) / med[3]:.0f}%")


def area_tab(ssize, dsize):  # OpenCV's computeResizeAreaTab: (source index, float32 weight) per output index
    scale, out = 1.0 / (dsize / ssize), []
    for d in range(dsize):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, ssize - f1)
        s1, s2 = math.ceil(f1), min(math.floor(f2), ssize - 1)
        s1 = min(s1, s2)
        e = []
        if s1 - f1 > 1e-3:
            e.append((s1 - 1, (s1 - f1) / cell))
        e += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            e.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        out.append(e)
    k = max(map(len, out))
    idx = np.zeros((k, dsize), np.intp)
    wt = np.zeros((k, dsize), np.float32)
    for d, e in enumerate(out):
        for j, (s, a) in enumerate(e):
            idx[j, d], wt[j, d] = s, a
    return idx, wt


xi, xw = area_tab(w, 84)
yi, yw = area_tab(h, 84)


def numpy_area(img):  # horizontal then vertical, in OpenCV's order of float32 operations
    f = img.astype(np.float32)
    buf = f[:, xi[0]] * xw[0]
    for j in range(1, len(xi)):
        buf += f[:, xi[j]] * xw[j]
    s = buf[yi[0]] * yw[0][:, None]
    for j in range(1, len(yi)):
        s += buf[yi[j]] * yw[j][:, None]
    return np.clip(np.rint(s), 0, 255).astype(np.uint8)


def same_on_next_frame(k):
    ale.act(A[k])
    ale.getScreenGrayscale(mx)
    return np.array_equal(numpy_area(mx), cv2.resize(mx, (84, 84), interpolation=cv2.INTER_AREA))


same = all([same_on_next_frame(k) for k in range(200)])


def per_call(f, n=3000):
    f()
    c0 = time.process_time()
    for _ in range(n):
        f()
    return (time.process_time() - c0) / n * 1e6


cv2_us = per_call(lambda: cv2.resize(mx, (84, 84), interpolation=cv2.INTER_AREA))
numpy_us = per_call(lambda: numpy_area(mx))
print(f"resize alone, us: cv2 {cv2_us:.0f} | exact NumPy {numpy_us:.0f} (same output on 200 frames: {same})")
print("cv2", cv2.__version__, "threads", cv2.getNumThreads())

# cv2 with one thread instead of its default, in the full loop (3 alternating pairs)
default, by_threads = cv2.getNumThreads(), {}
for _ in range(3):
    for nt in (default, 1):
        cv2.setNumThreads(nt)
        by_threads.setdefault(nt, []).append(loop(3))
cv2.setNumThreads(default)
print(
    f"full step, CPU us: cv2 threads {default} {[round(v) for v in by_threads[default]]} | "
    f"threads 1 {[round(v) for v in by_threads[1]]}"
)
# 4 frames resized at once as the channels of one image (OpenCV's INTER_AREA takes at most 4), and the
# transpose into that layout
frames = np.stack([mx] * 4)
hwc = np.ascontiguousarray(frames.transpose(1, 2, 0))
assert np.array_equal(
    cv2.resize(hwc, (84, 84), interpolation=cv2.INTER_AREA).transpose(2, 0, 1),
    np.stack([cv2.resize(f, (84, 84), interpolation=cv2.INTER_AREA) for f in frames]),
)
separate_us = per_call(lambda: [cv2.resize(f, (84, 84), interpolation=cv2.INTER_AREA) for f in frames], 1000) / 4
together_us = per_call(lambda: cv2.resize(hwc, (84, 84), interpolation=cv2.INTER_AREA), 1000) / 4
transpose_us = per_call(lambda: np.ascontiguousarray(frames.transpose(1, 2, 0)), 1000) / 4
print(
    f"per frame, us: 4 separate resizes {separate_us:.0f} | one 4-channel resize {together_us:.0f} | "
    f"the transpose to 4 channels {transpose_us:.0f}"
)
