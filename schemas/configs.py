"""Typed configs shared by every stage: dataclasses loaded from flags, YAML or dicts, validated up front."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

import yaml

from schemas.errors import SetupError


class ConfigError(SetupError, ValueError):
    """A config field is unknown or holds a value of the wrong type; the message names it."""


def coerce(name: str, value: Any, typ: Any) -> Any:
    """VALUE as type TYP (from YAML, a flag or --set: \"8,16\" for a tuple); ConfigError names NAME."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return coerce(name, value, non_none[0])
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `--set clip_strides=2` reads as one number: a one-item list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r}: expected a list")
        inner = args[0] if args else str
        return tuple(coerce(name, v, inner) for v in value) if origin is tuple else [coerce(name, v, inner) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{name}={value!r}: expected true or false")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected a number")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r}: expected {'an integer' if typ is int else 'a number'}") from None
        if typ is int:
            if f != int(f):
                raise ConfigError(f"{name}={value!r}: expected an integer")
            return int(f)
        return f
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}={value!r}: expected a string")
        return str(value)
    return value


def from_mapping(cls, values: Mapping[str, Any], where: str = "config"):
    """Builds dataclass `cls` from a mapping, naming any unknown key or badly typed value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k.replace("-", "_") not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {k.replace("-", "_"): coerce(f"{where}.{k}", v, hints[k.replace('-', '_')]) for k, v in values.items()}
    return cls(**kwargs)


def load_yaml(path: str) -> dict:
    """Reads a YAML mapping; raises ConfigError naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(pairs: list[str]) -> dict:
    """Turns ['a=1', 'b=x'] (from --set) into {'a': 1, 'b': 'x'} with YAML scalar typing."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out
