"""Reading config files: a regular file of bounded size, YAML without aliases or deep nesting, keys
given once, and ``base:`` chains of bounded depth. Each refusal is one ConfigError line, decided before
the file can take much memory or time. ``common/config.py`` builds the config from what is read here."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from common.config import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, ConfigError


class Refused(yaml.YAMLError):
    """YAML that parses but that a config may not hold: its text says why, in one line."""


if TYPE_CHECKING:
    _YAML_BASE = yaml.SafeLoader
else:
    _YAML_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML has it


class _ConfigLoader(_YAML_BASE):
    """safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise Refused(f"config key {key}: given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _check_events(text: str) -> None:
    """Refuse aliases and deep nesting from the parser's events, before anything is composed: a few
    hundred bytes of nested aliases name 10^30 strings, which any code that walks or prints the value
    expands (no config needs an alias), and deep nesting crashes libyaml's composer."""
    depth = 0
    for event in yaml.parse(text, Loader=_YAML_BASE):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            raise Refused(f"YAML aliases (*{event.anchor}, line {line}) are not allowed")
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise Refused(f"lists or mappings nested more than {MAX_YAML_DEPTH} deep")
        elif isinstance(event, _CLOSE):
            depth -= 1


def parse_yaml(text: str) -> Any:
    """``text`` as YAML, checked by ``_check_events`` first; raises YAMLError (``Refused`` with its reason)."""
    _check_events(text)
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except ValueError as e:  # int("1" * 5000): past Python's limit on the digits of an int
        raise Refused(f"a value YAML cannot read ({str(e).split(':')[0]})") from None


def read_config_text(path: str | Path) -> str:
    """A config file's text: a regular file of at most MAX_CONFIG_BYTES of UTF-8. Anything else (a
    device such as /dev/zero, a FIFO, which would block the open itself, a larger file) is one
    ConfigError line, decided before more than the cap is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"config file {path}: not a regular file")
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: larger than {MAX_CONFIG_BYTES >> 10} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; malformed or hostile files raise ConfigError with one line."""
    text = read_config_text(path)
    try:
        data = parse_yaml(text)
    except Refused as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)  # a Mark, or None
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path}:{line} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of key: value")
    return data


MAX_BASE_DEPTH = 8


def load_yaml_tree(path: str | Path, depth: int = 0) -> dict[str, Any]:
    """A config file's values over those of the file its ``base:`` names (a path relative to it), recursively."""
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"config file {path}: base must name a config file, got {base!r}")
    if depth >= MAX_BASE_DEPTH:
        raise ConfigError(f"config file {path}: more than {MAX_BASE_DEPTH} bases deep (a base that names itself?)")
    return {**load_yaml_tree(Path(path).parent / base, depth + 1), **data}
