"""temporal_pooling: a per-frame 2D CNN whose features are averaged or maxed over time."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, frame_cnn, per_frame, window_input

# The values an option may take (read by trainer/archs/__init__.py without importing this module).
CHOICES = {"pooling": ("avg", "max")}


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128, pooling="avg"):
    """Builds the temporal_pooling backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: conv filters per stage of the per-frame CNN.
      units: width of the features.
      pooling: avg | max over time.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    seq = per_frame(inputs, frame_cnn(window_shape[1:], filters))  # [batch, T, F]
    if pooling == "avg":
        x = layers.GlobalAveragePooling1D(name="temporal_avg_pool")(seq)
    else:
        x = layers.GlobalMaxPooling1D(name="temporal_max_pool")(seq)
    return backbone_model(inputs, dense_features(x, units), "temporal_pooling")
