"""cnn_rnn: a 2D CNN applied to every frame, then an LSTM or GRU over the frame features."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, frame_cnn, per_frame, window_input

# The values an option may take (read by trainer/archs/__init__.py without importing this module).
CHOICES = {"rnn": ("lstm", "gru")}


def recurrent_layer(kind: str, units: int, name: str, return_sequences: bool = False):
    """An LSTM or GRU layer (`kind`: lstm | gru)."""
    cls = layers.LSTM if kind == "lstm" else layers.GRU
    return cls(units, return_sequences=return_sequences, name=name)


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128, rnn="lstm"):
    """Builds the cnn_rnn backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: conv filters per stage of the per-frame CNN.
      units: width of the recurrent layer and the features.
      rnn: lstm | gru.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    seq = per_frame(inputs, frame_cnn(window_shape[1:], filters))  # [batch, T, F]
    x = recurrent_layer(rnn, units, name=f"temporal_{rnn}")(seq)
    return backbone_model(inputs, dense_features(x, units), "cnn_rnn")
