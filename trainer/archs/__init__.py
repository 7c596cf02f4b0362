"""The architecture registry: one dict from name to the module whose build_backbone() makes it.

Every module exposes `build_backbone(window_shape, cfg) -> keras.Model` mapping float frames
[batch, T, H, W, C] to a feature vector [batch, F]; trainer/heads.py adds the task head. Modules
are imported only when built, so `--list-archs` and config checks do not start TensorFlow.
"""
from __future__ import annotations

import dataclasses
import importlib

from schemas.configs import ConfigError


@dataclasses.dataclass(frozen=True)
class ArchEntry:
    """How to find and describe one architecture.

    Attributes:
      module: the module holding build_backbone().
      summary: what it is and when to pick it (shown by --help and the README).
      options: the TrainConfig fields it reads.
      takes_pixels: True when the backbone wants 0..255 pixels (it does its own preprocessing);
        False when it wants frames standardised with the dataset's pixel stats.
    """

    module: str
    summary: str
    options: tuple[str, ...]
    takes_pixels: bool = False


_CNN = ("filters", "dropout")
ARCHS: dict[str, ArchEntry] = {
    "conv3d": ArchEntry(
        "trainer.archs.conv3d", "stacked Conv3D + MaxPooling3D: joint space-time filters; a solid "
        "default for short clips with motion", _CNN + ("units",)),
    "cnn_rnn": ArchEntry(
        "trainer.archs.cnn_rnn", "per-frame 2D CNN, then an LSTM/GRU over time: long windows, "
        "fewer FLOPs than 3D convolutions", _CNN + ("units", "rnn")),
    "cnn_rnn_attention": ArchEntry(
        "trainer.archs.cnn_rnn_attention", "cnn_rnn plus self-attention over time and attention "
        "pooling: when the informative frames are few and anywhere in the window",
        _CNN + ("units", "rnn", "attention_heads")),
    "convlstm": ArchEntry(
        "trainer.archs.convlstm", "stacked ConvLSTM2D with normalisation: keeps spatial maps "
        "through time; good for next_frame and local motion, slow on CPU", _CNN + ("units",)),
    "temporal_pooling": ArchEntry(
        "trainer.archs.temporal_pooling", "per-frame 2D CNN averaged or maxed over time: the "
        "cheapest baseline, ignores frame order", _CNN + ("units", "pooling")),
    "pretrained_2p5d": ArchEntry(
        "trainer.archs.pretrained_2p5d", "keras.applications backbone per frame (ImageNet "
        "transfer), then Conv3D or GRU over time: small datasets of natural-looking video",
        ("backbone", "backbone_weights", "freeze_backbone", "temporal", "units", "dropout"),
        takes_pixels=True),
    "frames_as_channels": ArchEntry(
        "trainer.archs.frames_as_channels", "the T frames stacked as channels of one 2D CNN: the "
        "fastest path, for gray video and short windows", _CNN + ("units",)),
    "stacked": ArchEntry(
        "trainer.archs.stacked", "per-frame 2D CNN, then Conv3D, then GRU: spatial, short- and "
        "long-range temporal features in one model", _CNN + ("units",)),
}


def check_arch_name(name: str) -> None:
    """Raises ConfigError listing the valid names when `name` is not registered."""
    if name not in ARCHS:
        raise ConfigError(f"train config: arch={name!r} is not a known architecture; "
                          f"valid: {', '.join(ARCHS)}")


def build_backbone(name: str, window_shape: tuple[int, int, int, int], cfg):
    """Builds the named architecture's backbone.

    Args:
      name: a key of ARCHS.
      window_shape: (T, H, W, C) of the dataset's windows.
      cfg: the TrainConfig (the architecture reads the fields in its `options`).

    Returns:
      A keras.Model from float frames [batch, T, H, W, C] to features [batch, F].

    Raises:
      ConfigError: `name` is not registered.
    """
    check_arch_name(name)
    module = importlib.import_module(ARCHS[name].module)
    return module.build_backbone(window_shape, cfg)
