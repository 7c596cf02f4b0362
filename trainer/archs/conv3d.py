"""conv3d: stacked Conv3D + MaxPooling3D, filters that see space and time at once."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, conv3d_stage, dense_features, window_input


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128):
    """Builds the conv3d backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: Conv3D filters per stage.
      units: width of the features.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    x = inputs
    for i, filters in enumerate(filters):
        # The first stage keeps every frame: windows are short (4-16 frames), and pooling time
        # before any temporal filter has run would throw motion away.
        x = conv3d_stage(x, filters, name=f"conv3d_stage{i}", pool_time=i > 0)
    # Global pooling, not Flatten: the head's size does not grow with H x W x T.
    x = layers.GlobalAveragePooling3D(name="conv3d_gap")(x)
    return backbone_model(inputs, dense_features(x, units), "conv3d")
