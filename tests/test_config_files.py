"""Config files and overrides that would take all memory or hang: each is refused in one line, within a
second and under 300 MB, whether it comes as --config, as a base: or as a key=value override."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import ConfigError, load_config

MAX_RSS = 300 << 20
LOADER = (  # the config loader alone in a child: how long the refusal took, measured around the call
    "import sys, time\n"
    "from common.config import ConfigError, load_config\n"
    "t = time.monotonic()\n"
    "try:\n"
    "    load_config(sys.argv[1] or None, sys.argv[2:])\n"
    "    print('loaded')\n"
    "except ConfigError as e:\n"
    "    print(f'refused: {e}')\n"
    "print(f'seconds: {time.monotonic() - t:.3f}')\n"
)


def alias_bomb(levels: int = 30) -> str:
    """A YAML list of 10**levels strings in a few hundred bytes: each level lists the previous one ten times."""
    parts = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def cases(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (config path, overrides)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"EnvName: {alias_bomb()}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: bomb.yaml\nNumWorkers: 4\n")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * ((2 << 20) // 10) + "NumWorkers: 4\n")  # 2 MiB
    deep = tmp_path / "deep.yaml"
    deep.write_text("EnvName: " + "[" * 60_000 + "\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("EnvName: [" + "1, " * 20_000 + "]\n")  # just under the cap, and no game name
    return {
        "alias bomb": (str(bomb), []),
        "alias bomb in a base": (str(child), []),
        "alias bomb in an override": ("", [f"NumWorkers={alias_bomb()}"]),
        "/dev/zero": ("/dev/zero", []),
        "/dev/urandom": ("/dev/urandom", []),
        "a FIFO": (str(fifo), []),
        "a file over the cap": (str(big), []),
        "nesting 60,000 deep": (str(deep), []),
        "a list of 20,000 items": (str(flat), []),
        "a 5,000-digit int": ("", ["NumWorkers=1" + "0" * 5000]),
    }


@pytest.mark.parametrize(
    "name",
    [
        "alias bomb",
        "alias bomb in a base",
        "alias bomb in an override",
        "/dev/zero",
        "/dev/urandom",
        "a FIFO",
        "a file over the cap",
        "nesting 60,000 deep",
        "a list of 20,000 items",
        "a 5,000-digit int",
    ],
)
def test_hostile_config_input_is_refused_in_a_second_and_little_memory(tmp_path: Path, name: str, measured_run):
    path, overrides = cases(tmp_path)[name]
    got = measured_run(["-c", LOADER, path, *overrides], timeout_s=20, kill_rss=1 << 30)
    print(f"{name}: {got.killed or 'exit ' + str(got.rc)}, peak {got.peak_rss / 2**20:.0f} MiB, {got.wall_s:.2f} s")
    assert got.killed is None, got.killed
    lines = got.stdout.strip().splitlines()
    assert got.rc == 0 and len(lines) == 2 and lines[0].startswith("refused: config "), got.stdout + got.stderr
    assert float(lines[1].split()[1]) < 1.0
    assert got.peak_rss < MAX_RSS


@pytest.mark.parametrize("name", ["alias bomb in an override", "a FIFO"])
def test_launch_refuses_them_in_one_line(tmp_path: Path, name: str, measured_run):
    path, overrides = cases(tmp_path)[name]
    args = ["launch.py", "--print-config", *(["--config", path] if path else []), *overrides]
    got = measured_run(args, timeout_s=60, kill_rss=1 << 30)
    print(f"launch.py, {name}: {got.killed or 'exit ' + str(got.rc)}, peak {got.peak_rss / 2**20:.0f} MiB")
    assert got.killed is None, got.killed
    lines = got.stderr.strip().splitlines()
    assert got.rc == 2 and len(lines) == 1 and lines[0].startswith("launch: error: config"), got.stderr
    assert got.peak_rss < MAX_RSS


def test_anchors_without_aliases_and_ordinary_files_still_load(tmp_path: Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_text("NumWorkers: &n 8\nRolloutSteps: 16\nBatchSize: 32\n")
    assert load_config(p).NumWorkers == 8
    with pytest.raises(ConfigError, match="alias"):
        load_config(None, ["NumWorkers=[&a x, *a]"])
