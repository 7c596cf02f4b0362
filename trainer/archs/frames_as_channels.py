"""frames_as_channels: the T frames stacked along channels and read by one 2D CNN."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, conv2d_stage, dense_features, window_input


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128):
    """Builds the frames_as_channels backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: Conv2D filters per stage.
      units: width of the features.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    t, h, w, c = window_shape
    inputs = window_input(window_shape)
    # Time moves next to channels before the reshape so each pixel keeps its own T*C values.
    x = layers.Permute((2, 3, 1, 4), name="time_to_channels")(inputs)    # [batch, H, W, T, C]
    x = layers.Reshape((h, w, t * c), name="stack_frames")(x)
    for i, filters in enumerate(filters):
        x = conv2d_stage(x, filters, name=f"fac_stage{i}")
    x = layers.GlobalAveragePooling2D(name="fac_gap")(x)
    return backbone_model(inputs, dense_features(x, units), "frames_as_channels")
