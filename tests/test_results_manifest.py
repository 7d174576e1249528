"""docs/results/MANIFEST.tsv and the files under docs/results/ agree: every file listed once with its
sha256, a commit and a command, and nothing there that the list leaves out."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
MANIFEST = RESULTS / "MANIFEST.tsv"
COLUMNS = ["file", "sha256", "commit", "commit_from", "command"]


def read_manifest(path: Path = MANIFEST) -> list[dict[str, str]]:
    """The rows of a manifest (``#`` lines are comments; the first other line names the columns)."""
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0].split("\t") == COLUMNS, lines[0]
    rows = []
    for ln in lines[1:]:
        cells = ln.split("\t")
        assert len(cells) == len(COLUMNS), ln
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


def mismatches(results: Path, rows: list[dict[str, str]]) -> list[str]:
    """What differs between ``results`` and its manifest rows: files missing, unlisted, listed twice, or
    with another sha256; rows without a commit hash or a command."""
    listed = [r["file"] for r in rows]
    present = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
    present = [p for p in present if p != MANIFEST.name]
    out = [f"unlisted: {p}" for p in present if p not in listed]
    out += [f"listed twice: {p}" for p in sorted(set(listed)) if listed.count(p) > 1]
    for r in rows:
        f = results / r["file"]
        if not f.is_file():
            out.append(f"missing: {r['file']}")
        elif hashlib.sha256(f.read_bytes()).hexdigest() != r["sha256"]:
            out.append(f"sha256 differs: {r['file']}")
        if not re.fullmatch(r"[0-9a-f]{7,40}", r["commit"]) or not r["command"].strip():
            out.append(f"no commit or command: {r['file']}")
    return out


def test_the_manifest_matches_the_files() -> None:
    rows = read_manifest()
    assert rows
    assert mismatches(RESULTS, rows) == []


def test_a_changed_missing_or_unlisted_file_is_caught(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.log").write_bytes(b"x")
    (tmp_path / "y.log").write_bytes(b"y")
    good = {"sha256": hashlib.sha256(b"x").hexdigest(), "commit": "abc1234", "commit_from": "", "command": "run"}
    assert mismatches(tmp_path, [{"file": "a/x.log", **good}]) == ["unlisted: y.log"]
    assert mismatches(tmp_path, [{"file": "a/x.log", **good, "sha256": "0" * 64}])[-1] == "sha256 differs: a/x.log"
    assert "missing: z.log" in mismatches(tmp_path, [{"file": "z.log", **good}])
    assert "no commit or command: a/x.log" in mismatches(tmp_path, [{"file": "a/x.log", **good, "command": ""}])
