"""The README stays true: its opening commands, its order (a first run before the reference), every config key
with its current default, every metric name, and the docs it points to (docs/reference.md and its sections)."""

import re
from pathlib import Path

from common.config import docs_table

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
REFERENCE = (REPO / "docs" / "reference.md").read_text()


def headings(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, re.M)


def test_readme_opens_with_the_two_setup_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "launch.py" in block and "pytest" in block and "constraints.txt" in block


def test_readme_reaches_a_first_run_before_the_reference() -> None:
    h = headings(README)
    assert h[0] == "Quick start", h
    order = ["Quick start", "One machine", "Several GPUs, two servers", "Study", "Evaluating a checkpoint"]
    assert [x for x in h if x in order] == order, h
    assert h[-1] == "Config keys", h  # the section launch.py --help names
    assert "python3 launch.py --config configs/smoke.yaml --actors 2 --learner-gpu -1" in README
    for moved in ("Reliability bounds", "Failure semantics", "Layout", "Tests", "Speed"):
        assert moved in headings(REFERENCE) and moved not in h, moved


def test_readme_lists_every_config_key() -> None:
    assert docs_table() in README


def test_readme_names_every_metric() -> None:
    from learner.logs import METRICS

    missing = [m for m in METRICS if m not in README]
    assert not missing, missing


def test_every_docs_path_and_reference_section_named_exists() -> None:
    for text in (README, REFERENCE):
        for path in set(re.findall(r"`(docs/[\w./-]+)`", text)):
            assert (REPO / path).exists(), path
    named = re.findall(r'`docs/reference\.md`, "([^"]+)"', README)
    named += re.findall(r'\("([^"]+)"\)', README.split("\n## Reference\n", 1)[1].split("\n## ", 1)[0])
    assert named
    for section in named:
        assert section in headings(REFERENCE), section
