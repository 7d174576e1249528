"""common/config.py: one typed config, defaults < YAML < overrides, every refusal a one-line ConfigError."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest
import yaml

from common.config import (
    Config,
    ConfigError,
    docs_table,
    dump_yaml,
    from_dict,
    load_config,
    parse_overrides,
    rom_name,
    shape_keys,
    verify,
)
from common.config_files import load_yaml

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "configs" / "report.yaml"  # the report's config, verbatim
REPO_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def refused(fn, *args, key: str | None = None, **kwargs) -> str:
    """Call fn expecting a ConfigError whose text is one line and names ``key``."""
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    text = str(e.value)
    assert text and "\n" not in text, f"not one line: {text!r}"
    if key is not None:
        assert key in text, f"{key!r} not named in {text!r}"
    return text


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------
# the report's config and the repo's configs


def test_seed_config_loads_unchanged():
    cfg = load_config(SEED_CONFIG)
    raw = yaml.safe_load(SEED_CONFIG.read_text())
    assert cfg.NumWorkers == 128 and cfg.RolloutSteps == 128 and cfg.NumInitSteps == 1024
    assert cfg.EnvName == "MontezumaRevengeNoFrameskip-v4"
    assert cfg.MaxStepsPerEpisode == 4500
    assert cfg.UseStickyAction is True and cfg.StickyActionProb == 0.25
    assert cfg.ExtRewardDiscount == 0.999 and cfg.IntRewardDiscount == 0.99
    assert cfg.ExtCoeff == 2.0 and cfg.IntCoeff == 1.0
    assert cfg.LearningRate == 1e-4 and cfg.BatchSize == 4096 and cfg.EpochSteps == 4
    assert cfg.SavePath == "/home/chervontsev/checkpoints/RndAgentAlt.ckpt"
    assert cfg.UseTPU is False and cfg.UseVTraceCorrection is True
    for key, value in raw.items():  # every key of the file, with its value
        got = getattr(cfg, key)
        assert got == value, key
        if isinstance(value, bool):
            assert got is value, key
    assert isinstance(cfg.ExtCoeff, float) and isinstance(cfg.NumWorkers, int)
    assert cfg.total_agent_steps == 10000 * 128 * 128


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=lambda p: p.name)
def test_repo_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    data = load_yaml(path)
    known = {f.name for f in dataclasses.fields(Config)}
    assert set(data) - {"base"} <= known


# ---------------------------------------------------------------------------------------------
# defaults, precedence, parsing


def test_defaults_verify_and_match_the_paper():
    cfg = load_config()
    assert cfg == Config()
    assert verify(Config()) == Config()
    assert cfg.ExtRewardDiscount == 0.999 and cfg.IntRewardDiscount == 0.99
    assert cfg.FrameSkip == 4 and cfg.FrameStack == 4 and cfg.max_policy_lag == 1


def test_defaults_follow_the_released_code():
    """The release feeds IntCoeff*A_int + ExtCoeff*A_ext to PPO unstandardised (ppo_agent.py, buf_advs), and its
    advantage is GAE(lambda), which V-trace's "gae" form is when the actors' policy is the learner's."""
    cfg = Config()
    assert cfg.normalize_advantages is False
    assert cfg.vtrace_advantage == "gae"


@pytest.mark.parametrize("value", ["gae", "impala"])
def test_vtrace_advantage_forms_accepted(value):
    assert from_dict({"vtrace_advantage": value}).vtrace_advantage == value
    assert load_config(None, [f"vtrace_advantage={value}"]).vtrace_advantage == value


def test_every_field_documented():
    for f in dataclasses.fields(Config):
        assert f.metadata.get("doc"), f"{f.name} has no doc"
    table = docs_table()
    for f in dataclasses.fields(Config):
        assert f"`{f.name}`" in table


def test_precedence_defaults_yaml_overrides(tmp_path):
    p = write(tmp_path, "NumWorkers: 16\nLearningRate: 2.0e-4\nExtCoeff: 3\nBatchSize: 256\n")
    cfg = load_config(p)
    assert cfg.NumWorkers == 16 and cfg.LearningRate == 2e-4
    assert cfg.ExtCoeff == 3.0 and isinstance(cfg.ExtCoeff, float)
    assert cfg.RolloutSteps == Config().RolloutSteps  # untouched: the default
    cfg = load_config(p, ["NumWorkers=8", "RolloutSteps=32"])
    assert cfg.NumWorkers == 8 and cfg.RolloutSteps == 32 and cfg.LearningRate == 2e-4
    cfg = load_config(p, {"LearningRate": 5e-4})
    assert cfg.LearningRate == 5e-4 and cfg.NumWorkers == 16
    cfg = load_config(None, ["NumWorkers=4", "BatchSize=512"])
    assert cfg.NumWorkers == 4 and cfg.LearningRate == Config().LearningRate


def test_load_does_not_mutate_a_base(tmp_path):
    base = Config()
    cfg = from_dict({"NumWorkers": 2, "BatchSize": 256}, base)
    assert cfg.NumWorkers == 2 and base.NumWorkers == 128


@pytest.mark.parametrize(
    "item,key,value",
    [
        ("LearningRate=3e-4", "LearningRate", 3e-4),
        ("LearningRate=3.0e-4", "LearningRate", 3e-4),
        ("LearningRate=1E-3", "LearningRate", 1e-3),
        ("ExtCoeff=2", "ExtCoeff", 2.0),
        ("UseVTraceCorrection=false", "UseVTraceCorrection", False),
        ("UseVTraceCorrection=False", "UseVTraceCorrection", False),
        ("UseStickyAction=true", "UseStickyAction", True),
        ("NumWorkers=64", "NumWorkers", 64),
        (" NumWorkers = 64 ", "NumWorkers", 64),
        ("EnvName=ALE/Pong-v5", "EnvName", "ALE/Pong-v5"),
        ("SavePath=/tmp/a=b.ckpt", "SavePath", "/tmp/a=b.ckpt"),
        ("wire_compression=zstd", "wire_compression", "zstd"),
    ],
)
def test_override_parsing(item, key, value):
    cfg = load_config(None, [item])
    got = getattr(cfg, key)
    assert got == value and type(got) is type(value)


def test_yaml_1_1_exponent_floats_in_files(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-4 without a dot as a string; the config still takes it as a float
    cfg = load_config(write(tmp_path, "LearningRate: 1e-4\nPPORewardEps: 2e-1\n"))
    assert cfg.LearningRate == 1e-4 and isinstance(cfg.LearningRate, float)
    assert cfg.PPORewardEps == 0.2


@pytest.mark.parametrize("item", ["SavePath=123", "SavePath=true", "SavePath=2024-01-01"])
def test_string_overrides_keep_their_text(item):
    """A str field given on the command line is the text after '=' (from_dict exempts SavePath from parsing,
    but parse_overrides has already turned '123' into an int and 'true' into a bool)."""
    cfg = load_config(None, [item])
    assert cfg.SavePath == item.split("=", 1)[1]


def test_parse_overrides_requires_key_value():
    refused(parse_overrides, ["NumWorkers"], key="NumWorkers")
    assert parse_overrides(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}  # text; from_dict types it per key


def test_empty_yaml_is_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "# only a comment\n", "d.yaml")) == Config()


def test_dump_yaml_round_trips(tmp_path):
    cfg = load_config(
        None, ["NumWorkers=12", "BatchSize=1536", "LearningRate=3e-4", "UseTPU=false", "SavePath=/x/y.ckpt"]
    )
    assert load_config(write(tmp_path, dump_yaml(cfg))) == cfg


def test_shape_keys():
    keys = shape_keys(Config())
    assert keys["NumWorkers"] == 128 and keys["ImageHeight"] == 84 and keys["EnvName"] == Config().EnvName
    assert shape_keys(Config(RolloutSteps=64)) != keys


# ---------------------------------------------------------------------------------------------
# refusals


def test_unknown_key_refused(tmp_path):
    refused(load_config, None, ["NumWorker=3"], key="NumWorker")
    refused(load_config, write(tmp_path, "LearnRate: 0.1\n"), key="LearnRate")
    refused(from_dict, {"numworkers": 3}, key="numworkers")


@pytest.mark.parametrize(
    "key,value",
    [
        ("NumWorkers", "many"),
        ("NumWorkers", 1.5),
        ("NumWorkers", 128.0),
        ("NumWorkers", True),
        ("NumWorkers", None),
        ("NumWorkers", [1]),
        ("RolloutSteps", False),
        ("seed", 0.5),
        ("LearningRate", "fast"),
        ("LearningRate", True),
        ("LearningRate", None),
        ("UseTPU", 0),
        ("UseStickyAction", 1),
        ("UseStickyAction", "maybe"),
        ("EnvName", 5),
        ("SavePath", None),
        ("wire_compression", 1),
        ("StickyActionProb", [0.1]),
    ],
)
def test_wrong_type_refused(key, value, tmp_path):
    refused(from_dict, {key: value}, key=key)
    refused(load_config, write(tmp_path, yaml.safe_dump({key: value})), key=key)


@pytest.mark.parametrize(
    "key,value",
    [
        ("NumWorkers", -1),
        ("NumWorkers", 0),
        ("RolloutSteps", 0),
        ("BatchSize", -4096),
        ("FrameStack", 0),
        ("NumInitSteps", -1),
        ("max_policy_lag", -1),
        ("seed", -3),
        ("ExtCoeff", -1.0),
        ("PPOEntropyCoeff", -0.1),
        ("LearningRate", 0.0),
        ("LearningRate", -1e-4),
        ("ClipGradNorm", 0.0),
        ("PPORewardEps", 0.0),
        ("StickyActionProb", 1.5),
        ("StickyActionProb", -0.1),
        ("ExtRewardDiscount", 1.001),
        ("IntRewardDiscount", -0.5),
        ("PPOAdvLambda", 2.0),
        ("RNDUpdateProportion", 0.0),
        ("RNDUpdateProportion", 1.01),
        ("FrameSkip", 1),
        ("ImageHeight", 43),
        ("ImageWidth", 20),
        ("wire_compression", "lz4"),
        ("vtrace_advantage", "GAE"),
        ("vtrace_advantage", "retrace"),
        ("vtrace_advantage", ""),
        ("EnvName", "Montezuma Revenge!"),
        ("EnvName", ""),
        ("actor_timeout_s", 0.0),
        ("actor_device", "gpu"),
        ("actor_device", "cuda:"),
        ("actor_device", "cuda:x"),
        ("actor_device", " cpu"),
        ("actor_device", "cuda:01"),
        ("actor_device", "cuda:\u0661"),
    ],
)
def test_out_of_range_refused(key, value):
    refused(from_dict, {key: value}, key=key)


@pytest.mark.parametrize(
    "key,value",
    [
        ("StickyActionProb", 0.0),
        ("StickyActionProb", 1.0),
        ("PPOAdvLambda", 0.0),
        ("ExtRewardDiscount", 1.0),
        ("RNDUpdateProportion", 1.0),
        ("NumInitSteps", 0),
        ("max_policy_lag", 0),
        ("ImageHeight", 44),
        ("FrameSkip", 2),
        ("actor_device", "cuda"),
        ("actor_device", "cuda:1"),
    ],
)
def test_range_edges_accepted(key, value):
    assert getattr(from_dict({key: value}), key) == value


@pytest.mark.parametrize(
    "item",
    [
        "LearningRate=nan",
        "LearningRate=.nan",
        "LearningRate=inf",
        "LearningRate=.inf",
        "ExtCoeff=-.inf",
        "StickyActionProb=nan",
        "IntCoeff=Infinity",
    ],
)
def test_non_finite_refused(item):
    refused(load_config, None, [item], key=item.split("=")[0])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_refused_from_yaml(value, tmp_path):
    refused(load_config, write(tmp_path, yaml.safe_dump({"vtrace_rho_bar": value})), key="vtrace_rho_bar")


def test_use_tpu_refused(tmp_path):
    refused(load_config, None, ["UseTPU=True"], key="UseTPU")
    refused(load_config, write(tmp_path, "UseTPU: True\n"), key="UseTPU")


def test_malformed_yaml_refused(tmp_path):
    p = write(tmp_path, "NumWorkers: 4\nLearningRate: [1, 2\n")
    text = refused(load_config, p)
    assert str(p) in text
    refused(load_yaml, write(tmp_path, "a: b: c\n", "e.yaml"))


@pytest.mark.parametrize("text", ["- NumWorkers\n- 4\n", "42\n", "just a string\n"])
def test_yaml_that_is_not_a_mapping_refused(text, tmp_path):
    refused(load_config, write(tmp_path, text))


def test_missing_file_refused(tmp_path):
    p = tmp_path / "nope.yaml"
    text = refused(load_config, p)
    assert "nope.yaml" in text


def test_directory_instead_of_file_refused(tmp_path):
    refused(load_config, tmp_path)


def test_error_from_yaml_names_the_key(tmp_path):
    p = write(tmp_path, "NumWorkers: 4\nStickyActionProb: 7\n")
    refused(load_config, p, key="StickyActionProb")


# ---------------------------------------------------------------------------------------------
# rom names


@pytest.mark.parametrize(
    "env_name,rom",
    [
        ("MontezumaRevengeNoFrameskip-v4", "montezuma_revenge"),
        ("ALE/MontezumaRevenge-v5", "montezuma_revenge"),
        ("montezuma_revenge", "montezuma_revenge"),
        ("ALE/Pong-v5", "pong"),
        ("PongNoFrameskip-v4", "pong"),
        ("pong", "pong"),
        ("BreakoutDeterministic-v4", "breakout"),
        ("SpaceInvaders-v5", "space_invaders"),
        ("MsPacmanNoFrameskip-v4", "ms_pacman"),
    ],
)
def test_rom_name(env_name, rom):
    assert rom_name(env_name) == rom


@pytest.mark.parametrize("env_name", ["", "ALE/", "Pong v5", "Pong-v5/", "ALE/Pong.v5", "Pong;rm"])
def test_rom_name_refuses_garbage(env_name):
    with pytest.raises(ValueError):
        rom_name(env_name)


def test_rom_name_agrees_with_gymnasium_registry():
    """Every ALE id gymnasium knows maps to the ROM that gymnasium itself would load."""
    gym = pytest.importorskip("gymnasium")
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    checked, wrong = 0, []
    for env_id, spec in gym.registry.items():
        game = (spec.kwargs or {}).get("game")
        if not game or "ale_py" not in str(spec.entry_point):
            continue
        checked += 1
        try:
            got = rom_name(env_id)
        except ValueError as e:
            got = f"ValueError: {e}"
        if got != game:
            wrong.append((env_id, game, got))
    assert checked > 100
    assert not wrong, f"rom_name disagrees with gymnasium on {wrong}"


# ---------------------------------------------------------------------------------------------
# values that pass a type check but would crash, hang or eat memory later


@pytest.mark.parametrize(
    "item,key",
    [
        ("ImageHeight=100000", "ImageHeight"),
        ("ImageWidth=161", "ImageWidth"),
        ("RolloutSteps=1000000000", "RolloutSteps"),
        (f"seed={10**20}", "seed"),
        ("actor_timeout_s=1e-9", "actor_timeout_s"),
        ("FrameStack=1000", "FrameStack"),
        ("FrameSkip=1000", "FrameSkip"),
        ("NumWorkers=100000", "NumWorkers"),
        ("LearningRate=10", "LearningRate"),
        ("MaxStepsPerEpisode=1000000000", "MaxStepsPerEpisode"),
        ("keep_checkpoints=100000", "keep_checkpoints"),
        ("max_policy_lag=2000000000", "max_policy_lag"),
        ("EpochSteps=100000", "EpochSteps"),
    ],
)
def test_absurd_values_refused(item, key):
    refused(load_config, None, [item], key=key)


def test_batch_size_larger_than_a_batch_refused():
    text = refused(load_config, None, ["NumWorkers=4", "RolloutSteps=16", "BatchSize=65"], key="BatchSize")
    assert "64" in text
    assert load_config(None, ["NumWorkers=4", "RolloutSteps=16", "BatchSize=64"]).BatchSize == 64


def test_a_batch_too_large_for_memory_refused():
    refused(
        load_config, None, ["NumWorkers=8192", "RolloutSteps=4096", "ImageHeight=84", "ImageWidth=84"], key="NumWorkers"
    )


def test_an_override_can_mend_the_file(tmp_path):
    p = write(tmp_path, "NumWorkers: 4\nRolloutSteps: 16\n")  # alone: the default BatchSize is more than a batch
    refused(load_config, p, key="BatchSize")
    assert load_config(p, ["BatchSize=32"]).BatchSize == 32


def test_non_utf8_config_refused(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("EnvName: Montezuma\xe9\n".encode("latin-1"))
    text = refused(load_config, p)
    assert "UTF-8" in text and str(p) in text


def test_a_key_given_twice_refused(tmp_path):
    p = write(tmp_path, "LearningRate: 1.0e-4\nNumWorkers: 4\nLearningRate: 3.0e-4\n")
    text = refused(load_config, p, key="LearningRate")
    assert "twice" in text and "line 3" in text


def test_ranges_live_in_the_fields():
    """Every number key has its range in its field, and every Literal key its choices in its type."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if hints[f.name] in (int, float):
            lo, hi, _ = f.metadata["range"]
            assert lo is not None, f.name
        if typing.get_origin(hints[f.name]) is typing.Literal:
            assert f.default in typing.get_args(hints[f.name])


# ---------------------------------------------------------------------------------------------
# a config over a base


def test_a_config_lists_only_what_it_changes_over_its_base(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "NumWorkers: 16\nBatchSize: 512\nLearningRate: 2.0e-4\n", "base.yaml")
    child = write(tmp_path / "sub", "base: ../base.yaml\nLearningRate: 3.0e-4\n", "child.yaml")
    cfg = load_config(child, ["ExtCoeff=0"])
    assert (cfg.NumWorkers, cfg.BatchSize, cfg.LearningRate, cfg.ExtCoeff) == (16, 512, 3e-4, 0.0)
    grandchild = write(tmp_path, "base: sub/child.yaml\nNumWorkers: 8\n", "grandchild.yaml")
    assert (load_config(grandchild).NumWorkers, load_config(grandchild).LearningRate) == (8, 3e-4)


def test_bad_bases_refused(tmp_path):
    text = refused(load_config, write(tmp_path, "base: nope.yaml\n", "a.yaml"))
    assert "nope.yaml" in text
    refused(load_config, write(tmp_path, "base: 3\n", "b.yaml"))
    text = refused(load_config, write(tmp_path, "base: c.yaml\n", "c.yaml"))
    assert "deep" in text


def test_derived_repo_configs_name_their_base():
    for name in ("smoke.yaml", "breakout_check.yaml", "montezuma_cpu_check.yaml", "study_cpu.yaml"):
        assert yaml.safe_load((REPO / "configs" / name).read_text())["base"].endswith(".yaml"), name
    assert load_config(REPO / "configs" / "study_cpu.yaml").NumWorkers == 16  # from montezuma_cpu_check.yaml
