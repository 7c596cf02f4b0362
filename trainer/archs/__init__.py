"""The architecture registry: one dict from name to the module whose build_backbone() makes it.

Every module exposes `build_backbone(window_shape, *, knob=default, ...) -> keras.Model` mapping
float frames [batch, T, H, W, C] to a feature vector [batch, F]; its keyword arguments are the
architecture's hyperparameters (TrainConfig.arch_options), and an optional module-level literal
`CHOICES = {knob: (allowed, ...)}` lists the values a string knob may take ("<file>": or an existing
file). trainer/heads.py adds the task head. Modules are imported only when built: the knobs and
their defaults are read from the module's source, so `--list-archs` and config checks do not start
TensorFlow (which must not start before trainer/cpu.py has chosen its settings).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import os
from typing import Any, Mapping

from schemas.configs import ConfigError, coerce


@dataclasses.dataclass(frozen=True)
class ArchEntry:
    """How to find and describe one architecture.

    Attributes:
      module: the module holding build_backbone().
      summary: what it is and when to pick it (shown by --help and the README).
      takes_pixels: True when the backbone wants 0..255 pixels (it does its own preprocessing);
        False when it wants frames standardised with the dataset's pixel stats.
    """

    module: str
    summary: str
    takes_pixels: bool = False


ARCHS: dict[str, ArchEntry] = {
    "conv3d": ArchEntry(
        "trainer.archs.conv3d", "stacked Conv3D + MaxPooling3D: joint space-time filters; a solid "
        "default for short clips with motion"),
    "cnn_rnn": ArchEntry(
        "trainer.archs.cnn_rnn", "per-frame 2D CNN, then an LSTM/GRU over time: long windows, "
        "fewer FLOPs than 3D convolutions"),
    "cnn_rnn_attention": ArchEntry(
        "trainer.archs.cnn_rnn_attention", "cnn_rnn plus self-attention over time and attention "
        "pooling: when the informative frames are few and anywhere in the window"),
    "convlstm": ArchEntry(
        "trainer.archs.convlstm", "stacked ConvLSTM2D with normalisation: keeps spatial maps "
        "through time; good for next_frame and local motion, slow on CPU"),
    "temporal_pooling": ArchEntry(
        "trainer.archs.temporal_pooling", "per-frame 2D CNN averaged or maxed over time: the "
        "cheapest baseline, ignores frame order"),
    "pretrained_2p5d": ArchEntry(
        "trainer.archs.pretrained_2p5d", "keras.applications backbone per frame (ImageNet "
        "transfer), then Conv3D or GRU over time: small datasets of natural-looking video",
        takes_pixels=True),
    "frames_as_channels": ArchEntry(
        "trainer.archs.frames_as_channels", "the T frames stacked as channels of one 2D CNN: the "
        "fastest path, for gray video and short windows"),
    "stacked": ArchEntry(
        "trainer.archs.stacked", "per-frame 2D CNN, then Conv3D, then GRU: spatial, short- and "
        "long-range temporal features in one model"),
}


def check_arch_name(name: str) -> None:
    """Raises ConfigError listing the valid names when `name` is not registered."""
    if name not in ARCHS:
        raise ConfigError(f"train config: arch={name!r} is not a known architecture; "
                          f"valid: {', '.join(ARCHS)}")


@functools.lru_cache(maxsize=None)
def _source_knobs(name: str) -> tuple[dict[str, Any], dict[str, tuple]]:
    """({knob: default}, CHOICES) of NAME's build_backbone, read from its source with `ast`."""
    spec = importlib.util.find_spec(ARCHS[name].module)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_backbone")
    defaults = {a.arg: ast.literal_eval(d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults)}
    choices = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "CHOICES" for t in n.targets)), {})
    return defaults, choices


def arch_defaults(name: str) -> dict[str, Any]:
    """The hyperparameters of architecture NAME with their defaults: build_backbone's keyword arguments."""
    check_arch_name(name)
    return dict(_source_knobs(name)[0])


def check_arch_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Checks arch_options against NAME's builder and returns every knob's value (defaults filled in).

    Raises:
      ConfigError: an option the builder does not take (the error lists those it does), or a value
        of the wrong type or outside its CHOICES, named as arch_options.<knob>.
    """
    check_arch_name(name)
    defaults, choices = _source_knobs(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"train config: arch_options {unknown} are not options of {name}; it takes: "
                          f"{', '.join(f'{k} (default {v!r})' for k, v in defaults.items())}")
    out = {}
    for knob, default in defaults.items():
        field = f"train config: arch_options.{knob}"
        kind = tuple[int, ...] if isinstance(default, tuple) else type(default)
        value = coerce(field, options.get(knob, default), kind)
        allowed = choices.get(knob)
        ok = (allowed is None or value in allowed or ("<file>" in allowed and os.path.isfile(value)))
        if isinstance(value, tuple):
            ok = ok and len(value) >= 1 and all(v >= 1 for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            ok = ok and value >= 1
        if not ok:
            expected = (" | ".join(a if a != "<file>" else "the path of an existing file" for a in allowed)
                        if allowed else "a non-empty list of integers >= 1" if isinstance(value, tuple)
                        else "an integer >= 1")
            raise ConfigError(f"{field}={value!r} is invalid: expected {expected}")
        out[knob] = value
    return out


def build_backbone(name: str, window_shape: tuple[int, int, int, int], options: Mapping[str, Any]):
    """Builds the named architecture's backbone.

    Args:
      name: a key of ARCHS.
      window_shape: (T, H, W, C) of the dataset's windows.
      options: its hyperparameters (TrainConfig.arch_options; missing ones take their defaults).

    Returns:
      A keras.Model from float frames [batch, T, H, W, C] to features [batch, F].

    Raises:
      ConfigError: `name` is not registered, or an option is not one of its builder's.
    """
    options = check_arch_options(name, options)
    return importlib.import_module(ARCHS[name].module).build_backbone(window_shape, **options)
