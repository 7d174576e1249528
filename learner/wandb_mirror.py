"""An optional mirror of a run's metrics and config in Weights & Biases (``--wandb PROJECT``): the same
metric names as TensorBoard's tags; nothing changes without it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from learner.logs import tags

WANDB_ID_FILE = "wandb_run_id.txt"  # a resumed run continues its W&B run


def wandb_missing() -> str | None:
    """Why Weights & Biases cannot be used here (its package is not installed), or None."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return 'the wandb package is not installed (pip install -e ".[wandb]")'
    return None


class WandbMirror:
    """Mirrors each metrics row to a Weights & Biases run in ``project``, under the TensorBoard tags at
    step ``agent_steps``, and the run's config. Its files go to RUN_DIR/wandb; WANDB_MODE=offline keeps
    them there only. A resumed run continues the W&B run whose id RUN_DIR/wandb_run_id.txt holds."""

    def __init__(self, project: str, run_dir: Path, config: dict[str, Any]):
        import wandb

        id_file = Path(run_dir) / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        try:
            self.run = wandb.init(
                project=project, dir=str(run_dir), name=Path(run_dir).name, id=run_id, resume="allow", config=config
            )
        except Exception as e:  # no login, no network: W&B's own errors are of many types
            raise RuntimeError(f"wandb.init: {type(e).__name__}: {e}") from None
        id_file.write_text(run_id + "\n")

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(tags(row), step=int(row["agent_steps"]))

    def close(self) -> None:
        self.run.finish()
