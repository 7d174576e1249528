"""The README stays true: its opening commands, and every config key with its current default."""

from pathlib import Path

from common.config import docs_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_setup_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "launch.py" in block and "pytest" in block and "constraints.txt" in block


def test_readme_lists_every_config_key() -> None:
    assert docs_table() in README


def test_readme_names_every_metric() -> None:
    from learner.logs import METRICS

    missing = [m for m in METRICS if m not in README]
    assert not missing, missing
