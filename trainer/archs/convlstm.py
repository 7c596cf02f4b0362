"""convlstm: stacked ConvLSTM2D layers, each followed by batch normalisation and spatial pooling."""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, halve, window_input
from trainer.archs.norm import BatchNorm


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128):
    """Builds the convlstm backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: one ConvLSTM2D per entry, with that many filters.
      units: width of the features.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    x = inputs
    last = len(filters) - 1
    for i, filters in enumerate(filters):
        # Every layer but the last hands the whole sequence on; the last summarises the window.
        x = layers.ConvLSTM2D(filters, 3, padding="same", return_sequences=i < last,
                              name=f"convlstm{i}")(x)
        # Normalising the states keeps the stacked recurrences trainable at higher learning rates.
        x = BatchNorm(synchronized=True, name=f"convlstm{i}_bn")(x)
        if i < last:
            x = layers.MaxPooling3D((1, halve(x.shape[2]), halve(x.shape[3])), padding="same",
                                    name=f"convlstm{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="convlstm_gap")(x)
    return backbone_model(inputs, dense_features(x, units), "convlstm")
