"""One typed config tree: defaults < YAML file < command-line ``key=value`` overrides.

The report's own keys (``configs/report.yaml``) keep their CamelCase spelling so that
its file loads unchanged; keys this project adds for the distributed system are snake_case.
Every field carries its documentation in ``metadata["doc"]`` and its range in ``metadata["range"]``
(string keys with choices are typed ``Literal``); ``verify`` applies them, then the cross-field checks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key."""


# The smallest frame side the policy's convs (8/4, 4/2, 4/1) map to at least one pixel; the RND convs
# (8/4, 4/2, 3/1) need 36. Kept here so that config stays free of torch; tests check it against the networks.
MIN_FRAME_SIZE = 44
SCREEN_HEIGHT, SCREEN_WIDTH = 210, 160  # the Atari screen: a larger frame only interpolates
MAX_SEED = (1 << 32) - 1  # actor seeds are seed*100003 + ...: they stay far below torch's 64-bit limit
MIN_ACTOR_TIMEOUT_S = 3.0  # the learner sends a heartbeat every second: a shorter timeout trips on jitter
MAX_BATCH_FRAME_BYTES = 8 << 30  # one batch's frames, NumWorkers x (RolloutSteps + FrameStack) x H x W, uint8
# A config file: the largest in configs/ is under 4 KB; at this size any YAML parses in well under a second.
MAX_CONFIG_BYTES = 64 << 10
MAX_OVERRIDE_BYTES = 4096  # one key=value's value: a path or a name, never more
MAX_YAML_DEPTH = 32  # nested lists and mappings; libyaml's composer recurses in C and crashes past some 10^4
MAX_SHOWN = 120  # characters of a refused value quoted in its error line


def _f(default: Any, doc: str, lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Any:
    """A field with its doc and its range ``lo <= v <= hi`` (``lo < v`` with ``above``; None: no bound).
    A string field typed ``Literal[...]`` takes its choices from the type."""
    return field(default=default, metadata={"doc": doc, "range": (lo, hi, above)})


@dataclass
class Config:
    # --- environment (the report's keys) ---
    EnvName: str = _f(
        "MontezumaRevengeNoFrameskip-v4",
        "Atari game: a gym id (e.g. MontezumaRevengeNoFrameskip-v4, ALE/Pong-v5) or a ROM name.",
    )
    MaxStepsPerEpisode: int = _f(
        4500, "Episode cap in agent steps; reaching it is a truncation, not game over.", 1, 1_000_000
    )
    ImageHeight: int = _f(84, "Observation height after resizing (INTER_AREA).", MIN_FRAME_SIZE, SCREEN_HEIGHT)
    ImageWidth: int = _f(84, "Observation width after resizing.", MIN_FRAME_SIZE, SCREEN_WIDTH)
    UseStickyAction: bool = _f(True, "Sticky actions (Machado et al. 2018) via ALE's repeat_action_probability.")
    StickyActionProb: float = _f(0.25, "Per-frame probability of repeating the previous action.", 0.0, 1.0)
    # --- rollouts ---
    NumWorkers: int = _f(128, "Total number of env streams across all actors.", 1, 8192)
    RolloutSteps: int = _f(128, "Agent steps per env in one segment; a batch is NumWorkers x RolloutSteps.", 1, 4096)
    NumInitSteps: int = _f(
        1024,
        "Random-action steps per env used to warm up the observation normaliser "
        "(the report's value; the paper's code takes 50 x 128 = 6400).",
        0,
        1_000_000,
    )
    # --- RL ---
    ExtRewardDiscount: float = _f(0.999, "Discount of the extrinsic stream (cut at game over).", 0.0, 1.0)
    IntRewardDiscount: float = _f(0.99, "Discount of the intrinsic stream (never cut).", 0.0, 1.0)
    ExtCoeff: float = _f(2.0, "Weight of the extrinsic advantage.", 0.0, 1e3)
    IntCoeff: float = _f(1.0, "Weight of the intrinsic advantage.", 0.0, 1e3)
    LearningRate: float = _f(1e-4, "Adam learning rate (policy and predictor).", 0.0, 1.0, above=True)
    ClipGradNorm: float = _f(10.0, "Global gradient-norm clip.", 0.0, 1e6, above=True)
    BatchSize: int = _f(4096, "PPO minibatch size in samples (agent steps).", 1, None)
    EpochSteps: int = _f(4, "PPO epochs over each batch.", 1, 1000)
    SavePath: str = _f(
        "",
        "Legacy checkpoint path of the report; ignored unless no --run-dir is given "
        "(then its directory becomes the run dir).",
    )
    NumEpochs: int = _f(
        10000, "Number of learner updates; default total agent steps = NumEpochs*NumWorkers*RolloutSteps.", 1, 1 << 30
    )
    RNDUpdateProportion: float = _f(
        0.25, "Fraction of each minibatch the RND predictor is trained on.", 0.0, 1.0, above=True
    )
    PPOEntropyCoeff: float = _f(0.001, "Entropy bonus coefficient.", 0.0, 10.0)
    PPORewardEps: float = _f(0.1, "PPO clip range epsilon.", 0.0, 1.0, above=True)
    PPOAdvLambda: float = _f(0.95, "lambda of GAE, and of V-trace's traces c_t = lambda*min(c_bar, pi/mu).", 0.0, 1.0)
    UseVTraceCorrection: bool = _f(True, "Correct for policy lag with V-trace; False uses plain GAE.")
    UseTPU: bool = _f(False, "Accepted for compatibility with the report's config; must be False.")
    # --- additions of this project ---
    FrameSkip: int = _f(4, "Emulator frames per agent step (max over the last two).", 2, 32)
    FrameStack: int = _f(4, "Frames stacked into one observation.", 1, 32)
    max_policy_lag: int = _f(1, "Most updates an actor's weights may lag; 0 = synchronous baseline.", 0, 1 << 30)
    vtrace_rho_bar: float = _f(1.0, "V-trace truncation rho_bar of the importance weights.", 0.0, 1e3, above=True)
    vtrace_c_bar: float = _f(1.0, "V-trace truncation c_bar of the traces.", 0.0, 1e3, above=True)
    vtrace_advantage: Literal["gae", "impala"] = _f(
        "gae",
        "V-trace's policy advantage: gae, rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s) + "
        "gamma_s lambda (v_{s+1} - V(x_{s+1}))), equal to GAE(lambda), the paper's "
        "code's advantage, when the actors' policy is the learner's; or impala, "
        "rho_s (r_s + gamma_s v_{s+1} - V(x_s)), equal to GAE(lambda) at lambda = 1 only.",
    )
    value_coeff: float = _f(1.0, "Weight of the (ext + int) value loss.", 0.0, 1e3)
    normalize_advantages: bool = _f(
        False,
        "Standardise the combined advantage per batch; the paper's code does not "
        "(it feeds `IntCoeff*A_int + ExtCoeff*A_ext` to PPO as is).",
    )
    obs_clip: float = _f(5.0, "Clip of the normalised RND observation.", 0.0, 1e3, above=True)
    seed: int = _f(
        0,
        "Seed of learner and actors. The learner initialises its networks from seed and draws "
        "minibatches and the predictor's sample mask from seed + 1; actor i of learner rank r, in "
        "its k-th restart, seeds env stream s with `base + s` and samples actions from "
        "`base + 7919*(i+1)`, where base = `seed*100003 + 1000000007*r + 1000003*k` (so actors of "
        "different ranks never share seeds below about 1000 restarts).",
        0,
        MAX_SEED,
    )
    checkpoint_every: int = _f(100, "Write a checkpoint every this many updates (and at exit).", 1, 1 << 30)
    keep_checkpoints: int = _f(3, "How many numbered checkpoints to keep besides latest.pt.", 1, 1000)
    wire_compression: Literal["none", "zstd", "auto"] = _f(
        "auto", "Segment compression: none, zstd, or auto (zstd unless the learner address is loopback or ipc)."
    )
    actor_timeout_s: float = _f(
        60.0,
        "An actor that hears nothing from its learner this long, once nothing listens at the learner's "
        "address (the learner ended), exits.",
        MIN_ACTOR_TIMEOUT_S,
        86_400.0,
    )
    learner_pause_s: float = _f(
        3600.0,
        "An actor whose learner is silent while its address still takes connections or cannot be reached "
        "(the learner paused, or the network cut) waits this long, one actor of a machine printing a line a "
        "minute, then exits; training goes on when the learner is heard again. Below actor_timeout_s, "
        "actor_timeout_s holds.",
        MIN_ACTOR_TIMEOUT_S,
        7 * 86_400.0,
    )
    learner_precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto",
        "Policy network math on the learner: fp32, bf16 (autocast of the convs and shared layers; the "
        "heads stay fp32), or auto (bf16 on CUDA, and on a CPU with native bf16, AVX512_BF16 or AMX, for "
        "frames of at least 84x84, where it measured faster; fp32 elsewhere). The RND networks run in fp32 "
        "(on CUDA with TF32 matmuls and convolutions) except as rnd_train_precision says.",
    )
    rnd_train_precision: Literal["fp32", "bf16"] = _f(
        "fp32",
        "The RND predictor's forward and backward in the PPO epochs: fp32, or bf16 (autocast of the predictor "
        "alone; the target, the error and the intrinsic-reward pass stay fp32).",
    )
    learner_compile: bool = _f(False, "torch.compile the learner's networks (slow first update, faster after).")
    learner_heap_pad_mb: int = _f(
        1024,
        "Freed memory the learner's C heap keeps for reuse, in MiB (glibc's M_TOP_PAD): an update frees and "
        "reallocates the same large tensors every minibatch, and without it each one faults its pages in "
        "again. 0 leaves malloc's defaults; ignored where the C library is not glibc.",
        0,
        2047,
    )
    dist_timeout_s: float = _f(
        300.0,
        "Several learner ranks: how long a rank may go without a heartbeat, or a collective may take, before "
        "the other ranks stop with a line naming it (the last checkpoint stays as it is).",
        5.0,
        86_400.0,
    )
    actor_precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto",
        "The actors' policy step: fp32, bf16 (autocast of the network; softmax, sampling and the "
        "log-probs sent stay fp32, so they are those of the distribution that sampled), or auto (the "
        "rule of learner_precision, on the actor's device).",
    )
    actor_device: str = _f(
        "cpu",
        "Where actors run their policy step: cpu, or cuda / cuda:N when the actors' "
        "machine has a GPU (the envs always step on the CPU).",
    )
    wandb_project: str = _f(
        "",
        "Weights & Biases project the learner mirrors its metrics (the TensorBoard tags) and this config "
        'to; empty: off. Needs `pip install -e ".[wandb]"`; `launch.py --wandb PROJECT` sets it.',
    )

    # ---------------------------------------------------------------
    @property
    def total_agent_steps(self) -> int:
        return self.NumEpochs * self.NumWorkers * self.RolloutSteps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify(cfg: Config) -> Config:
    """All checks: each key's type, then its range or choices (from its field), then the cross-field ones.
    Raises ConfigError naming the key."""
    for f in fields(cfg):
        _check_type(cfg, f.name)
    for f in fields(cfg):
        _check_range(f.name, getattr(cfg, f.name), f.metadata["range"])
    _check_cross_fields(cfg)
    return cfg


@functools.cache  # get_type_hints costs about a millisecond a call, and the fields never change
def _types() -> dict[str, Any]:
    return get_type_hints(Config)


def config_types() -> dict[str, type]:
    """Each key's value type: bool, int, float or str (a Literal's choices are strings)."""
    return {name: _base_type(hint) for name, hint in _types().items()}


def _base_type(hint: Any) -> type:
    return str if get_origin(hint) is Literal else hint


def _or_list(choices: tuple) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else str(choices[0])


def _check_type(cfg: Config, name: str) -> None:
    hint = _types()[name]
    want = _base_type(hint)
    v = getattr(cfg, name)
    v = _coerce_float(v) if want is float else v
    setattr(cfg, name, v)
    if want is float and isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"config key {name}: must be a finite number, got {v!r}")
    if want is int and isinstance(v, bool) or not isinstance(v, want):
        raise ConfigError(f"config key {name}: expected {want.__name__}, got {type(v).__name__} {_shown(v)}")
    if get_origin(hint) is Literal and v not in get_args(hint):
        raise ConfigError(f"config key {name}: must be {_or_list(get_args(hint))}, got {_shown(v)}")


def _shown(v: Any) -> str:
    """``repr(v)``, cut to MAX_SHOWN characters: an error line stays one short line whatever was given."""
    if isinstance(v, (list, dict)) and len(v) > 8:
        return f"a {type(v).__name__} of {len(v)} items"
    text = repr(v)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def _check_range(name: str, v: Any, rng: tuple) -> None:
    lo, hi, above = rng
    if lo is not None and not (v > lo if above else v >= lo):
        raise ConfigError(f"config key {name}: must be {'>' if above else '>='} {lo}, got {v!r}")
    if hi is not None and not v <= hi:
        raise ConfigError(f"config key {name}: must be <= {hi}, got {v!r}")


def _check_cross_fields(cfg: Config) -> None:
    if cfg.UseTPU:
        raise ConfigError("config key UseTPU: TPUs are not supported; set UseTPU: False")
    if not re.fullmatch(r"cpu|cuda(:(0|[1-9][0-9]*))?", cfg.actor_device):  # what torch.device accepts
        raise ConfigError(f"config key actor_device: must be cpu, cuda or cuda:N, got {cfg.actor_device!r}")
    batch = cfg.NumWorkers * cfg.RolloutSteps
    if cfg.BatchSize > batch:
        raise ConfigError(
            f"config key BatchSize: {cfg.BatchSize} is more than a batch, NumWorkers x RolloutSteps = {batch}"
        )
    frame_bytes = cfg.NumWorkers * (cfg.RolloutSteps + cfg.FrameStack) * cfg.ImageHeight * cfg.ImageWidth
    if frame_bytes > MAX_BATCH_FRAME_BYTES:
        raise ConfigError(
            f"config key NumWorkers/RolloutSteps/ImageHeight/ImageWidth: one batch would hold "
            f"{frame_bytes / 2**30:.1f} GiB of frames, more than {MAX_BATCH_FRAME_BYTES >> 30} GiB"
        )
    try:
        rom_name(cfg.EnvName)
    except ValueError as e:
        raise ConfigError(f"config key EnvName: {e}") from None


# Keys that fix the shapes on the wire: a learner and its actors must agree on them.
SHAPE_KEYS = ("NumWorkers", "RolloutSteps", "FrameStack", "ImageHeight", "ImageWidth", "EnvName")


def shape_keys(cfg: Config) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in SHAPE_KEYS}


# The one list of keys a learner and its actors may set apart; every other key of an actor's config (its
# --config and key=value, where given) must equal the learner's, which the actor gets with its weights.
LOCAL_KEYS: dict[str, str] = {
    # the actor's own: how this machine runs its share, not what the experiment is
    "actor_device": "actor: where this machine's actors run their policy step",
    "actor_precision": "actor: the policy step's math on this machine's device (its log-probs stay fp32)",
    "actor_timeout_s": "actor: how long this machine's actors wait on a silent learner (their link, not the run)",
    "learner_pause_s": "actor: how long they wait on a silent learner whose address still listens",
    "wire_compression": "actor: how it sends its segments; every message names its compression, the learner "
    "reads either",
    # the learner's own: how it computes and keeps its state; actors never read them
    "learner_precision": "learner: its update's math",
    "rnd_train_precision": "learner: its predictor's math",
    "learner_compile": "learner: torch.compile of its networks",
    "learner_heap_pad_mb": "learner: its C heap",
    "checkpoint_every": "learner: when it writes checkpoints",
    "keep_checkpoints": "learner: how many it keeps",
    "SavePath": "learner: where its run dir goes",
    "wandb_project": "learner: where it mirrors its metrics",
    "dist_timeout_s": "learner: how long its ranks wait on a silent rank",
}
ACTOR_KEYS = ("actor_device", "actor_precision", "actor_timeout_s", "learner_pause_s", "wire_compression")


def config_differences(learner: Config, actor: dict[str, Any]) -> list[str]:
    """Each key of ``actor`` (an actor's resolved values) outside LOCAL_KEYS that differs from the
    learner's, as ``key <learner's value> (learner) != <actor's> (actor)``."""
    ours = learner.to_dict()
    return [
        f"{k} {ours[k]!r} (learner) != {v!r} (actor)"
        for k, v in actor.items()
        if k not in LOCAL_KEYS and ours.get(k) != v
    ]


def actor_config(learner: Config, actor: dict[str, Any]) -> Config:
    """The config an actor runs with: the learner's, with the actor's own values of ACTOR_KEYS where
    ``actor`` gives them."""
    return from_dict({k: actor[k] for k in ACTOR_KEYS if k in actor}, learner)


def _coerce_float(v: Any) -> Any:
    """YAML 1.1 reads '1e-4' as a string and 3 as an int; both are fine floats."""
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def rom_name(env_name: str) -> str:
    """'MontezumaRevengeNoFrameskip-v4' / 'ALE/MontezumaRevenge-v5' / 'montezuma_revenge' -> 'montezuma_revenge'."""
    name = env_name.split("/")[-1]
    name = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", name)
    if not re.fullmatch(r"[A-Za-z0-9_]+", name or ""):
        raise ValueError(f"cannot read a game name from {env_name!r}")
    from ale_py import roms  # the ROM list is the authority on spelling (e.g. tic_tac_toe_3d)

    by_key = {r.replace("_", "").lower(): r for r in roms.get_all_rom_ids()}
    rom = by_key.get(name.replace("_", "").lower())
    if rom is None:
        raise ValueError(f"{env_name!r} is not an ALE game that ale-py ships")
    return rom


def _parse_value(key: str, text: str) -> Any:
    """A key=value's value as a YAML scalar (the text itself if it is not YAML). Aliases are refused,
    as in files, and so is a value longer than any key needs."""
    from common.config_files import Refused, parse_yaml

    if len(text) > MAX_OVERRIDE_BYTES:
        raise ConfigError(f"config key {key}: a value of {len(text)} characters, more than {MAX_OVERRIDE_BYTES}")
    try:
        return parse_yaml(text)
    except Refused as e:
        raise ConfigError(f"config key {key}: {e}") from None
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['LearningRate=3e-4', 'UseVTraceCorrection=false'] -> typed dict (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()  # text: from_dict parses it for non-string keys only
    return out


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """Apply ``values`` over ``base`` (or defaults), refusing unknown keys; then verify."""
    cfg = dataclasses.replace(base) if base is not None else Config()
    known = {f.name for f in fields(Config)}
    for k, v in values.items():
        if k not in known:
            raise ConfigError(f"config key {k}: unknown key")
        if isinstance(v, str) and k != "SavePath" and _field_type(k) is not str:
            v = _parse_value(k, v)
        setattr(cfg, k, v)
    return verify(cfg)


def _field_type(name: str) -> type:
    return _base_type(_types()[name])


def load_yaml_tree(path: str | Path, depth: int = 0) -> dict[str, Any]:
    """A config file's values over those of its bases (``common/config_files.py``)."""
    from common.config_files import load_yaml_tree as read_tree

    return read_tree(path, depth)


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """defaults < YAML (over its bases) < overrides."""
    values = load_yaml_tree(path) if path is not None else {}
    if overrides:
        values.update(parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    return from_dict(values)  # checked once, so an override can mend what the file alone would break


def given_values(path: str | Path | None, overrides: list[str]) -> dict[str, Any] | None:
    """What a command line states about a config: with a file, every key of the config it resolves to;
    with ``key=value`` alone, those keys (typed and checked over the defaults); None with neither."""
    if path is not None:
        return load_config(path, overrides).to_dict()
    if not overrides:
        return None
    given = parse_overrides(overrides)
    cfg = from_dict(given)
    return {k: getattr(cfg, k) for k in given}


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def docs_table() -> str:
    """Markdown table of every key, its default and its doc (used for the README)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for f in fields(Config):
        rows.append(f"| `{f.name}` | `{f.default!r}` | {f.metadata['doc']} |")
    return "\n".join(rows)
