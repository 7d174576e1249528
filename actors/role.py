"""The actors role (``launch.py --role actors``): this machine's actor processes for a learner elsewhere.
They run with the learner's config, sent with its weights; a config given here is checked against it by
each actor, which exits 5 on a difference."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from actors.supervisor import actor_supervisor
from common.cli import UsageError, check_address, default_actors
from common.config import Config, dump_yaml, from_dict, load_config, parse_overrides


def actors_config(args: argparse.Namespace) -> Config | None:
    """The actors role's own config, checked here once: from --config (with key=value), or key=value
    over the defaults; None with neither (the learner's config alone). Its actor_device is checked here."""
    if args.config is None and not args.overrides:
        return None
    cfg = (
        load_config(args.config, args.overrides)
        if args.config is not None
        else from_dict(parse_overrides(args.overrides))
    )
    if args.config is not None or "actor_device" in parse_overrides(args.overrides):
        from actors.rollout import check_actor_device

        check_actor_device(cfg.actor_device)
    return cfg


def run_actors(args: argparse.Namespace, own: Config | None) -> int:
    """The actors take the learner's config from its weights; ``own`` (from --config and key=value,
    None without either) is checked against it by each actor, which exits 5 on a difference."""
    if not args.learner:
        raise UsageError("--role actors needs --learner tcp://HOST:PORT (the learner's --bind address)")
    check_address(args.learner, "--learner")
    n = args.actors or default_actors(own if args.config is not None else None)
    total = args.total_actors or n
    if args.actor_offset < 0 or args.actor_offset + n > total:
        raise UsageError(f"actors {args.actor_offset}..{args.actor_offset + n - 1} do not fit --total-actors {total}")
    if own is not None and args.config is not None and total > own.NumWorkers:
        raise UsageError(f"{total} actors for NumWorkers={own.NumWorkers} envs")
    if args.keys is not None:
        from common.transport import load_actor_keys

        load_actor_keys(args.keys)  # one line here rather than one per actor
    if args.config is None or own is None:  # key=value alone, or nothing: each actor gets the same words
        return supervise_actors(args, None, args.overrides, n, total)
    with tempfile.TemporaryDirectory(prefix="rnd-actors-") as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        cfg_file.write_text(dump_yaml(own))
        return supervise_actors(args, cfg_file, [], n, total)


def supervise_actors(args: argparse.Namespace, cfg_file: Path | None, overrides: list[str], n: int, total: int) -> int:
    """Run this machine's actors until the learner stops them or none is left; an actor that gave up
    on its learner is restarted while the learner is heard. The exit code says how they ended."""
    from actors.supervisor import learner_heard, supervise_until_done

    sup = actor_supervisor(
        cfg_file,
        args.learner,
        list(range(args.actor_offset, args.actor_offset + n)),
        total,
        overrides=overrides,
        restart_on_learner_gone=False,
        keys_dir=args.keys,
        learner_alive=lambda: learner_heard(args.learner, args.keys),
    )
    print(
        f"launch: {n} actors ({args.actor_offset}..{args.actor_offset + n - 1} of {total}) -> {args.learner}",
        flush=True,
    )
    stopped_by_signal = supervise_until_done(sup)
    print(f"launch: actors stopped ({sup.restarts} restarts)", flush=True)
    if stopped_by_signal:
        return 0
    code = sup.exit_code()
    if code and sup.notes:
        print(f"launch: error: no actor left: {'; '.join(sup.notes)}", file=sys.stderr, flush=True)
    return code
