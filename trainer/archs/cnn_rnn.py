"""cnn_rnn: a 2D CNN applied to every frame, then an LSTM or GRU over the frame features."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, frame_cnn, per_frame, window_input


def recurrent_layer(kind: str, units: int, name: str, return_sequences: bool = False):
    """An LSTM or GRU layer (`kind`: lstm | gru)."""
    cls = layers.LSTM if kind == "lstm" else layers.GRU
    return cls(units, return_sequences=return_sequences, name=name)


def build_backbone(window_shape, cfg):
    """Builds the cnn_rnn backbone.

    Args:
      window_shape: (T, H, W, C).
      cfg: TrainConfig; reads filters, units and rnn (lstm | gru).

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    seq = per_frame(inputs, frame_cnn(window_shape[1:], cfg.filters))  # [batch, T, F]
    x = recurrent_layer(cfg.rnn, cfg.units, name=f"temporal_{cfg.rnn}")(seq)
    return backbone_model(inputs, dense_features(x, cfg.units), "cnn_rnn")
