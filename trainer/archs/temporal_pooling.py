"""temporal_pooling: a per-frame 2D CNN whose features are averaged or maxed over time."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, frame_cnn, per_frame, window_input


def build_backbone(window_shape, cfg):
    """Builds the temporal_pooling backbone.

    Args:
      window_shape: (T, H, W, C).
      cfg: TrainConfig; reads filters, units and pooling (avg | max).

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    seq = per_frame(inputs, frame_cnn(window_shape[1:], cfg.filters))  # [batch, T, F]
    if cfg.pooling == "avg":
        x = layers.GlobalAveragePooling1D(name="temporal_avg_pool")(seq)
    else:
        x = layers.GlobalMaxPooling1D(name="temporal_max_pool")(seq)
    return backbone_model(inputs, dense_features(x, cfg.units), "temporal_pooling")
