"""stacked: per-frame 2D CNN feature maps, then Conv3D over them, then a GRU over time."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import (backbone_model, conv3d_stage, dense_features, frame_cnn,
                                  per_frame, window_input)


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128):
    """Builds the stacked backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: all but the last for the frame CNN, the last for the Conv3D.
      units: GRU width and the features.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    frame_filters = filters[:-1] or filters[:1]
    maps = per_frame(inputs, frame_cnn(window_shape[1:], frame_filters, global_pool=False))
    # Conv3D mixes neighbouring frames' maps; time is not pooled so the GRU still sees T steps.
    x = conv3d_stage(maps, filters[-1], name="stacked_conv3d", pool_time=False)
    x = per_frame(x, layers.GlobalMaxPooling2D(name="spatial_max"), name="spatial_pool")  # [B, T, F]
    x = layers.GRU(units, name="temporal_gru")(x)
    return backbone_model(inputs, dense_features(x, units), "stacked")
