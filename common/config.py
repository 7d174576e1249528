"""One typed config tree: defaults < YAML file < command-line ``key=value`` overrides.

The report's own keys (``../shared/seed/config.yaml``) keep their CamelCase spelling so that
its file loads unchanged; keys this project adds for the distributed system are snake_case.
Every field carries its documentation in ``metadata["doc"]``; ``verify`` holds every check.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key."""


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass
class Config:
    # --- environment (the report's keys) ---
    EnvName: str = _f("MontezumaRevengeNoFrameskip-v4",
                      "Atari game: a gym id (e.g. MontezumaRevengeNoFrameskip-v4, ALE/Pong-v5) or a ROM name.")
    MaxStepsPerEpisode: int = _f(4500, "Episode cap in agent steps; reaching it is a truncation, not game over.")
    ImageHeight: int = _f(84, "Observation height after resizing (INTER_AREA).")
    ImageWidth: int = _f(84, "Observation width after resizing.")
    UseStickyAction: bool = _f(True, "Sticky actions (Machado et al. 2018) via ALE's repeat_action_probability.")
    StickyActionProb: float = _f(0.25, "Per-frame probability of repeating the previous action.")
    # --- rollouts ---
    NumWorkers: int = _f(128, "Total number of env streams across all actors.")
    RolloutSteps: int = _f(128, "Agent steps per env in one segment; a batch is NumWorkers x RolloutSteps.")
    NumInitSteps: int = _f(1024, "Random-action steps per env used to warm up the observation normaliser "
                                 "(the report's value; the paper's code takes 50 x 128 = 6400).")
    # --- RL ---
    ExtRewardDiscount: float = _f(0.999, "Discount of the extrinsic stream (cut at game over).")
    IntRewardDiscount: float = _f(0.99, "Discount of the intrinsic stream (never cut).")
    ExtCoeff: float = _f(2.0, "Weight of the extrinsic advantage.")
    IntCoeff: float = _f(1.0, "Weight of the intrinsic advantage.")
    LearningRate: float = _f(1e-4, "Adam learning rate (policy and predictor).")
    ClipGradNorm: float = _f(10.0, "Global gradient-norm clip.")
    BatchSize: int = _f(4096, "PPO minibatch size in samples (agent steps).")
    EpochSteps: int = _f(4, "PPO epochs over each batch.")
    SavePath: str = _f("", "Legacy checkpoint path of the report; ignored unless no --run-dir is given "
                           "(then its directory becomes the run dir).")
    NumEpochs: int = _f(10000, "Number of learner updates; default total agent steps = "
                               "NumEpochs*NumWorkers*RolloutSteps.")
    RNDUpdateProportion: float = _f(0.25, "Fraction of each minibatch the RND predictor is trained on.")
    PPOEntropyCoeff: float = _f(0.001, "Entropy bonus coefficient.")
    PPORewardEps: float = _f(0.1, "PPO clip range epsilon.")
    PPOAdvLambda: float = _f(0.95, "lambda of GAE, and of V-trace's traces c_t = lambda*min(c_bar, pi/mu).")
    UseVTraceCorrection: bool = _f(True, "Correct for policy lag with V-trace; False uses plain GAE.")
    UseTPU: bool = _f(False, "Accepted for compatibility with the report's config; must be False.")
    # --- additions of this project ---
    FrameSkip: int = _f(4, "Emulator frames per agent step (max over the last two).")
    FrameStack: int = _f(4, "Frames stacked into one observation.")
    max_policy_lag: int = _f(1, "Most updates an actor's weights may lag; 0 = synchronous baseline.")
    vtrace_rho_bar: float = _f(1.0, "V-trace truncation rho_bar of the importance weights.")
    vtrace_c_bar: float = _f(1.0, "V-trace truncation c_bar of the traces.")
    vtrace_advantage: str = _f("gae", "V-trace's policy advantage: gae, rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s) + "
                                      "gamma_s lambda (v_{s+1} - V(x_{s+1}))), equal to GAE(lambda), the paper's "
                                      "code's advantage, when the actors' policy is the learner's; or impala, "
                                      "rho_s (r_s + gamma_s v_{s+1} - V(x_s)), equal to GAE(lambda) at lambda = 1 only.")
    value_coeff: float = _f(1.0, "Weight of the (ext + int) value loss.")
    normalize_advantages: bool = _f(False, "Standardise the combined advantage per batch; the paper's code does not "
                                           "(it feeds `IntCoeff*A_int + ExtCoeff*A_ext` to PPO as is).")
    obs_clip: float = _f(5.0, "Clip of the normalised RND observation.")
    seed: int = _f(0, "Seed of learner and actors. The learner initialises its networks from seed and draws "
                      "minibatches and the predictor's sample mask from seed + 1; actor i in its k-th restart "
                      "samples actions from `seed*100003 + 1000003*k + 7919*(i+1)` and seeds env stream s "
                      "with that + s.")
    checkpoint_every: int = _f(100, "Write a checkpoint every this many updates (and at exit).")
    keep_checkpoints: int = _f(3, "How many numbered checkpoints to keep besides latest.pt.")
    wire_compression: str = _f("auto", "Segment compression: none, zstd, or auto (zstd unless the learner "
                                       "address is loopback or ipc).")
    actor_timeout_s: float = _f(60.0, "An actor that hears nothing from its learner this long exits.")
    learner_precision: str = _f("auto", "Policy network math on the learner: fp32, bf16 (autocast), or auto "
                                        "(bf16 on CUDA, fp32 on CPU). The RND networks always run in fp32 (on CUDA with "
                                        "TF32 matmuls and convolutions).")
    learner_compile: bool = _f(False, "torch.compile the learner's networks (slow first update, faster after).")
    actor_device: str = _f("cpu", "Where actors run their policy step: cpu, or cuda / cuda:N when the actors' "
                                  "machine has a GPU (the envs always step on the CPU).")

    # ---------------------------------------------------------------
    @property
    def total_agent_steps(self) -> int:
        return self.NumEpochs * self.NumWorkers * self.RolloutSteps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The smallest frame side the policy's convs (8/4, 4/2, 4/1) map to at least one pixel; the RND convs
# (8/4, 4/2, 3/1) need 36. Kept here so that config stays free of torch; tests check it against the networks.
MIN_FRAME_SIZE = 44
_POSITIVE_INT = ("MaxStepsPerEpisode", "ImageHeight", "ImageWidth", "NumWorkers", "RolloutSteps", "BatchSize",
                 "EpochSteps", "NumEpochs", "FrameSkip", "FrameStack", "checkpoint_every", "keep_checkpoints")
_NON_NEGATIVE = ("NumInitSteps", "ExtCoeff", "IntCoeff", "PPOEntropyCoeff", "max_policy_lag", "value_coeff", "seed")
_POSITIVE_FLOAT = ("LearningRate", "ClipGradNorm", "PPORewardEps", "vtrace_rho_bar", "vtrace_c_bar", "obs_clip",
                   "actor_timeout_s")
_UNIT_INTERVAL = ("StickyActionProb", "ExtRewardDiscount", "IntRewardDiscount", "PPOAdvLambda")


def verify(cfg: Config) -> Config:
    """All checks, types first, then ranges, then cross-field ones. Raises ConfigError."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        want = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
        v = _coerce_float(v) if want is float else v
        setattr(cfg, f.name, v)
        if want is float and isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key {f.name}: must be a finite number, got {v!r}")
        if want is int and isinstance(v, bool) or not isinstance(v, want):
            raise ConfigError(f"config key {f.name}: expected {f.type}, got {type(v).__name__} {v!r}")
    for k in _POSITIVE_INT + _POSITIVE_FLOAT:
        if not getattr(cfg, k) > 0:
            raise ConfigError(f"config key {k}: must be > 0, got {getattr(cfg, k)!r}")
    for k in _NON_NEGATIVE:
        if not getattr(cfg, k) >= 0:
            raise ConfigError(f"config key {k}: must be >= 0, got {getattr(cfg, k)!r}")
    for k in _UNIT_INTERVAL:
        if not 0.0 <= getattr(cfg, k) <= 1.0:
            raise ConfigError(f"config key {k}: must be in [0, 1], got {getattr(cfg, k)!r}")
    if not 0.0 < cfg.RNDUpdateProportion <= 1.0:
        raise ConfigError(f"config key RNDUpdateProportion: must be in (0, 1], got {cfg.RNDUpdateProportion!r}")
    if cfg.UseTPU:
        raise ConfigError("config key UseTPU: TPUs are not supported; set UseTPU: False")
    if cfg.vtrace_advantage not in ("gae", "impala"):
        raise ConfigError(f"config key vtrace_advantage: must be gae or impala, got {cfg.vtrace_advantage!r}")
    if cfg.learner_precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"config key learner_precision: must be auto, fp32 or bf16, got {cfg.learner_precision!r}")
    if cfg.wire_compression not in ("none", "zstd", "auto"):
        raise ConfigError(f"config key wire_compression: must be none, zstd or auto, got {cfg.wire_compression!r}")
    if not re.fullmatch(r"cpu|cuda(:(0|[1-9][0-9]*))?", cfg.actor_device):  # what torch.device accepts
        raise ConfigError(f"config key actor_device: must be cpu, cuda or cuda:N, got {cfg.actor_device!r}")
    if cfg.FrameSkip < 2:
        raise ConfigError("config key FrameSkip: must be >= 2 (the max is taken over the last two frames)")
    if cfg.ImageHeight < MIN_FRAME_SIZE or cfg.ImageWidth < MIN_FRAME_SIZE:
        raise ConfigError(f"config key ImageHeight/ImageWidth: the paper's policy convs need at least "
                          f"{MIN_FRAME_SIZE}x{MIN_FRAME_SIZE}")
    try:
        rom_name(cfg.EnvName)
    except ValueError as e:
        raise ConfigError(f"config key EnvName: {e}") from None
    return cfg


# Keys that fix the shapes on the wire: a learner and its actors must agree on them.
SHAPE_KEYS = ("NumWorkers", "RolloutSteps", "FrameStack", "ImageHeight", "ImageWidth", "EnvName")


def shape_keys(cfg: Config) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in SHAPE_KEYS}


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


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
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
        if isinstance(v, str) and k != "SavePath" and _field_type(k) != "str":
            v = _parse_value(v)
        setattr(cfg, k, v)
    return verify(cfg)


def _field_type(name: str) -> str:
    return {f.name: f.type for f in fields(Config)}[name]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; malformed files raise ConfigError with one line."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path}:{line} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of key: value")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """defaults < YAML < overrides."""
    cfg = Config()
    if path is not None:
        cfg = from_dict(load_yaml(path), cfg)
    if overrides:
        ov = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        cfg = from_dict(ov, cfg)
    return verify(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def docs_table() -> str:
    """Markdown table of every key, its default and its doc (used for the README)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for f in fields(Config):
        rows.append(f"| `{f.name}` | `{f.default!r}` | {f.metadata['doc']} |")
    return "\n".join(rows)
