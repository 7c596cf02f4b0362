"""Building blocks shared by the architectures: conv stages whose pooling adapts to tiny inputs."""
from __future__ import annotations

import keras
from keras import layers, ops

from trainer.archs.norm import BatchNorm


def halve(size: int) -> int:
    """Pool factor for one axis: 2 while the axis is at least 2 long, so 4x4 inputs still build."""
    return 2 if size >= 2 else 1


def conv2d_stage(x, filters: int, name: str, pool: bool = True):
    """Conv2D 3x3 -> 2x2 max-pool (1 on axes already of length 1) -> BatchNorm -> ReLU.

    Pooling comes before the normalization (see `conv3d_stage`).
    """
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    if pool:
        x = layers.MaxPooling2D((halve(x.shape[1]), halve(x.shape[2])), padding="same",
                                name=f"{name}_pool")(x)
    x = BatchNorm(synchronized=True, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv3d_stage(x, filters: int, name: str, pool_time: bool = True):
    """Conv3D 3x3x3 -> max-pool over (T, H, W), adapting to small axes -> BatchNorm -> ReLU.

    Pooling comes first: ReLU commutes with max-pooling, and batch norm is a per-channel
    affine map, so the stage computes the same kind of function while normalizing a quarter
    (an eighth where time is pooled) of the activations. On a CPU batch norm and ReLU are
    memory-bound; after the convolution they were 20-30% of a training step (BENCHMARKS 6).
    """
    x = layers.Conv3D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    t = halve(x.shape[1]) if pool_time else 1
    x = layers.MaxPooling3D((t, halve(x.shape[2]), halve(x.shape[3])), padding="same",
                            name=f"{name}_pool")(x)
    x = BatchNorm(synchronized=True, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def frame_cnn(frame_shape: tuple[int, int, int], filters, name: str = "frame_cnn",
              global_pool: bool = True) -> keras.Model:
    """A small 2D CNN applied to one frame (wrap it in TimeDistributed for a window).

    Args:
      frame_shape: (H, W, C).
      filters: filters per stage; each stage halves H and W while they are >= 2.
      name: model name, also the prefix of its layer names.
      global_pool: True returns a vector [F] per frame; False keeps the last feature map.

    Returns:
      A keras.Model from [batch, H, W, C] to [batch, F] or [batch, h, w, F].
    """
    inputs = keras.Input(frame_shape, name=f"{name}_input")
    x = inputs
    for i, f in enumerate(filters):
        x = conv2d_stage(x, f, name=f"{name}_stage{i}")
    if global_pool:
        x = layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    return keras.Model(inputs, x, name=name)


@keras.saving.register_keras_serializable(package="clipforge")
class PerFrame(layers.Wrapper):
    """Applies `layer` to every frame of [batch, T, ...] by folding time into the batch.

    Keras 3's TimeDistributed calls the layer once per frame (T copies in the graph, T small
    convolutions); folding gives one call on batch*T frames: one copy to trace and export, and
    larger, faster convolutions. Batch-norm statistics then pool over all frames of the batch.
    """

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build((None,) + tuple(input_shape[2:]))

    def call(self, inputs, training=None):
        frames = inputs.shape[1]
        folded = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        out = self.layer(folded, training=training)
        return ops.reshape(out, (-1, frames) + tuple(out.shape[1:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])


def per_frame(x, cnn: keras.Layer, name: str = "per_frame"):
    """Applies a per-frame model to every frame of [batch, T, ...] with shared weights."""
    return PerFrame(cnn, name=name)(x)


def dense_features(x, units: int, name: str = "features"):
    """The backbone's final feature layer: Dense + ReLU."""
    return layers.Dense(units, activation="relu", name=name)(x)


def backbone_model(inputs, features, name: str) -> keras.Model:
    """Wraps a backbone graph as a named keras.Model (it shows up as one layer in the task model)."""
    return keras.Model(inputs, features, name=f"{name}_backbone")


def window_input(window_shape: tuple[int, int, int, int], name: str = "window"):
    """The backbone's input: float frames [batch, T, H, W, C]."""
    return keras.Input(window_shape, name=name)
