"""cnn_rnn_attention: per-frame CNN, RNN, self-attention over time, then attention pooling.

The RNN states attend to each other (MultiHeadAttention with a
residual connection), and additive attention pooling learns one weight per frame, so the
window's feature is a weighted sum that can single out the few frames that matter.
"""
from __future__ import annotations

from keras import layers

from trainer.archs.blocks import backbone_model, dense_features, frame_cnn, per_frame, window_input
from trainer.archs.cnn_rnn import recurrent_layer


def attention_pool(seq, units: int, name: str = "attention"):
    """Additive attention pooling over time: [batch, T, F] -> [batch, F].

    score_t = v . tanh(W h_t); weights = softmax over t; output = sum_t weights_t h_t.
    """
    hidden = layers.Dense(units, activation="tanh", name=f"{name}_hidden")(seq)
    scores = layers.Dense(1, name=f"{name}_score")(hidden)             # [batch, T, 1]
    weights = layers.Softmax(axis=1, name=f"{name}_weights")(scores)    # sums to 1 over T
    pooled = layers.Dot(axes=1, name=f"{name}_pool")([weights, seq])    # [batch, 1, F]
    return layers.Flatten(name=f"{name}_flatten")(pooled)


def build_backbone(window_shape, cfg):
    """Builds the cnn_rnn_attention backbone.

    Args:
      window_shape: (T, H, W, C).
      cfg: TrainConfig; reads filters, units, rnn and attention_heads.

    Returns:
      keras.Model from float frames [batch, T, H, W, C] to features [batch, units].
    """
    inputs = window_input(window_shape)
    seq = per_frame(inputs, frame_cnn(window_shape[1:], cfg.filters))
    seq = recurrent_layer(cfg.rnn, cfg.units, name=f"temporal_{cfg.rnn}", return_sequences=True)(seq)
    heads = cfg.attention_heads
    attended = layers.MultiHeadAttention(heads, key_dim=max(1, cfg.units // heads),
                                         name="temporal_self_attention")(seq, seq)
    seq = layers.Add(name="attention_residual")([seq, attended])
    seq = layers.LayerNormalization(name="attention_norm")(seq)
    x = attention_pool(seq, cfg.units)
    return backbone_model(inputs, dense_features(x, cfg.units), "cnn_rnn_attention")
