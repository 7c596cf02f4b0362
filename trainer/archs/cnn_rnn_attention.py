"""cnn_rnn_attention: per-frame CNN, RNN, self-attention over time, then attention pooling.

The RNN states attend to each other (MultiHeadAttention with a
residual connection), and additive attention pooling learns one weight per frame, so the
window's feature is a weighted sum that can single out the few frames that matter.
"""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, frame_cnn, per_frame, window_input
from trainer.archs.cnn_rnn import recurrent_layer

# The values an option may take (read by trainer/archs/__init__.py without importing this module).
CHOICES = {"rnn": ("lstm", "gru")}


def attention_pool(seq, units: int, name: str = "attention"):
    """Additive attention pooling over time: [batch, T, F] -> [batch, F].

    score_t = v . tanh(W h_t); weights = softmax over t; output = sum_t weights_t h_t.
    """
    hidden = layers.Dense(units, activation="tanh", name=f"{name}_hidden")(seq)
    scores = layers.Dense(1, name=f"{name}_score")(hidden)             # [batch, T, 1]
    weights = layers.Softmax(axis=1, name=f"{name}_weights")(scores)    # sums to 1 over T
    pooled = layers.Dot(axes=1, name=f"{name}_pool")([weights, seq])    # [batch, 1, F]
    return layers.Flatten(name=f"{name}_flatten")(pooled)


def build_backbone(window_shape, *, filters=(16, 32, 64), units=128, rnn="lstm", attention_heads=2):
    """Builds the cnn_rnn_attention backbone.

    Args:
      window_shape: (T, H, W, C).
      filters: conv filters per stage of the per-frame CNN.
      units: width of the recurrent layer, the attention and the features.
      rnn: lstm | gru.
      attention_heads: heads of the temporal self-attention.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    seq = per_frame(inputs, frame_cnn(window_shape[1:], filters))
    seq = recurrent_layer(rnn, units, name=f"temporal_{rnn}", return_sequences=True)(seq)
    heads = attention_heads
    attended = layers.MultiHeadAttention(heads, key_dim=max(1, units // heads),
                                         name="temporal_self_attention")(seq, seq)
    seq = layers.Add(name="attention_residual")([seq, attended])
    seq = layers.LayerNormalization(name="attention_norm")(seq)
    x = attention_pool(seq, units)
    return backbone_model(inputs, dense_features(x, units), "cnn_rnn_attention")
