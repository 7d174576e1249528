"""One actor process: ``python -m actors.main --learner ADDR --actor-id I --num-actors N [--config FILE] [key=value]``.

The actor runs with the config its learner sends with the weights; ``--config`` and ``key=value``, where
given, must agree with it (common/config.py LOCAL_KEYS lists the keys that may differ)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actors.actor import run_actor
from common.config import ConfigError, given_values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", help="a config to check against the learner's (its actor keys are used)")
    p.add_argument("--learner", required=True, help="the learner's address, tcp://HOST:PORT")
    p.add_argument("--actor-id", type=int, required=True)
    p.add_argument("--num-actors", type=int, required=True, help="actors across all machines")
    p.add_argument("--incarnation", type=int, default=0, help="restart count (changes env seeds)")
    p.add_argument("--keys", type=Path, help="keys folder: actor.key_secret and learner.key (CURVE)")
    p.add_argument("--report-waits", action="store_true", help="print a line a minute while the learner is silent")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args(argv)
    try:
        own = given_values(a.config, a.overrides)
    except ConfigError as e:
        print(f"actor: {e}", file=sys.stderr)
        return 2
    return run_actor(own, a.actor_id, a.num_actors, a.learner, a.incarnation, a.keys, speaks=a.report_waits)


if __name__ == "__main__":
    sys.exit(main())
