"""pretrained_2p5d: a keras.applications backbone per frame (2D, ImageNet), then time (the ".5D").

Gray frames are repeated to 3 channels, frames smaller than the backbone's minimum are resized
up inside the model, and the backbone's own preprocess_input runs inside the model too, so the
exported SavedModel still takes raw uint8 frames.
"""
from __future__ import annotations

import math
import os
import socket

import keras
from keras import layers

from trainer import TrainerError
from trainer.archs.blocks import backbone_model, dense_features, per_frame, window_input
from trainer.archs.norm import BatchNorm

# The values an option may take (read by trainer/archs/__init__.py without importing this module).
CHOICES = {"backbone": ("MobileNetV3Small", "EfficientNetB0", "ResNet50", "InceptionV3"),
           "temporal": ("conv3d", "gru"), "backbone_weights": ("imagenet", "none", "<file>")}

# name -> (keras.applications module, constructor name, smallest side the network accepts)
BACKBONES = {
    "MobileNetV3Small": ("mobilenet_v3", "MobileNetV3Small", 32),
    "EfficientNetB0": ("efficientnet", "EfficientNetB0", 32),
    "ResNet50": ("resnet50", "ResNet50", 32),
    "InceptionV3": ("inception_v3", "InceptionV3", 75),
}
DOWNLOAD_TIMEOUT_S = 60


class BackboneWeightsError(TrainerError):
    """The requested pretrained weights cannot be loaded (not cached and not downloadable)."""


@keras.saving.register_keras_serializable(package="clipforge")
class BackbonePreprocess(layers.Layer):
    """The backbone's own `preprocess_input` (0..255 RGB in), as a layer so it is saved with the model.

    MobileNetV3 and EfficientNet rescale inside the network (their preprocess_input is the
    identity); ResNet50 wants caffe-style BGR minus the ImageNet mean; InceptionV3 wants [-1, 1].
    """

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, x):
        module = getattr(keras.applications, BACKBONES[self.backbone][0])
        return module.preprocess_input(x)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def _keras_models_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _application(name: str, input_shape, weights, pooling):
    build = getattr(keras.applications, BACKBONES[name][1])
    if weights != "imagenet":
        return build(include_top=False, weights=weights, input_shape=input_shape, pooling=pooling)
    # Keras downloads ImageNet weights on first use. Bound the wait, and turn a failure (no
    # network, a proxy, a firewall) into one message that says what to do instead.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return build(include_top=False, weights="imagenet", input_shape=input_shape, pooling=pooling)
    except Exception as e:  # keras.utils.get_file raises a bare Exception on fetch failures
        if "URL fetch failure" not in str(e) and not isinstance(e, OSError):
            raise
        reason = str(e).splitlines()[0][:300]
        raise BackboneWeightsError(
            f"pretrained_2p5d: backbone_weights=imagenet needs the ImageNet weights of {name}, "
            f"which are not in the Keras cache ({_keras_models_dir()}) and could not be "
            f"downloaded: {reason}. Either run once where the network is reachable (the weights are "
            f"then cached), copy the weights file into that folder, pass "
            f"--set arch_options.backbone_weights=PATH to a weights file, or train from scratch with "
            f"--set arch_options.backbone_weights=none.") from None
    finally:
        socket.setdefaulttimeout(previous)


def _frame_model(frame_shape, backbone: str, backbone_weights: str, freeze_backbone: bool,
                 temporal: str) -> keras.Model:
    """The per-frame network: resize if too small, preprocess, backbone."""
    h, w, _ = frame_shape
    min_side = BACKBONES[backbone][2]
    inputs = keras.Input((h, w, 3), name="rgb_frame")
    x = inputs
    if min(h, w) < min_side:
        scale = min_side / min(h, w)
        h, w = math.ceil(h * scale), math.ceil(w * scale)
        x = layers.Resizing(h, w, name="upsize_to_backbone_minimum")(x)
    x = BackbonePreprocess(backbone, name="backbone_preprocess")(x)
    weights = None if backbone_weights == "none" else backbone_weights
    pooling = "avg" if temporal == "gru" else None
    app = _application(backbone, (h, w, 3), weights, pooling)
    app.trainable = not freeze_backbone
    return keras.Model(inputs, app(x), name=f"{backbone.lower()}_per_frame")


def build_backbone(window_shape, *, units=128, backbone="MobileNetV3Small", backbone_weights="imagenet", freeze_backbone=False,
                   temporal="conv3d"):
    """Builds the pretrained_2p5d backbone. It takes 0..255 pixels (see ArchEntry.takes_pixels).

    Args:
      window_shape: (T, H, W, C).
      units: width of the temporal layer and the features.
      backbone: a keras.applications network (BACKBONES).
      backbone_weights: imagenet | none | the path of a weights file.
      freeze_backbone: keep the backbone's weights fixed.
      temporal: conv3d | gru over the per-frame backbone features.

    Returns:
      keras.Model from float pixels [batch, T, H, W, C] to features [batch, units].

    Raises:
      BackboneWeightsError: backbone_weights=imagenet and the weights can be neither found in
        the Keras cache nor downloaded.
    """
    t, h, w, c = window_shape
    inputs = window_input(window_shape)
    x = inputs
    if c == 1:  # ImageNet backbones want 3 channels; repeating gray keeps the pretrained filters useful
        x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    x = per_frame(x, _frame_model((h, w, 3), backbone, backbone_weights, freeze_backbone, temporal),
                  name="per_frame_backbone")
    if temporal == "gru":
        x = layers.GRU(units, name="temporal_gru")(x)  # x: [batch, T, F]
    else:
        # A 3x1x1 kernel: the backbone already did the spatial work; this mixes 3 frames.
        x = layers.Conv3D(units, (3, 1, 1), padding="same", use_bias=False,
                          name="temporal_conv3d")(x)
        x = BatchNorm(synchronized=True, name="temporal_conv3d_bn")(x)
        x = layers.Activation("relu", name="temporal_conv3d_relu")(x)
        x = layers.GlobalAveragePooling3D(name="temporal_gap")(x)
    return backbone_model(inputs, dense_features(x, units), "pretrained_2p5d")
