"""FLOPs of one training window, counted from a Keras model's layers (multiply-adds x 2).

Only the layers that do the arithmetic are counted: convolutions (plain, depthwise, separable,
transposed), Dense, LSTM/GRU/SimpleRNN, ConvLSTM and multi-head attention. Normalisation,
activations, pooling and element-wise layers cost a few FLOPs per value and are left out, as in
the usual model FLOP tables. A training step costs about 3x the forward pass: the backward pass
computes the gradient with respect to the inputs and to the weights, each about one forward.
"""
from __future__ import annotations

import math

import keras
from keras import layers

TRAIN_FACTOR = 3  # forward + input gradients + weight gradients


def _dims(shape) -> tuple[int, ...]:
    """The non-batch dims of a Keras shape."""
    return tuple(int(d) for d in tuple(shape)[1:])


def _node_shapes(layer) -> list[tuple[tuple, tuple]]:
    """(input shape, output shape) of every call of `layer` in its functional graph."""
    out = []
    for node in getattr(layer, "_inbound_nodes", []):
        ins, outs = node.input_tensors, node.output_tensors
        if ins and outs:
            out.append((tuple(ins[0].shape), tuple(outs[0].shape)))
    return out


def _conv(layer, in_shape, out_shape) -> float:
    kernel = math.prod(layer.kernel_size)
    c_in, c_out = in_shape[-1], out_shape[-1]
    if isinstance(layer, layers.DepthwiseConv2D):
        return 2.0 * kernel * c_out * math.prod(out_shape[1:-1])
    if isinstance(layer, layers.SeparableConv2D):
        mid = c_in * layer.depth_multiplier
        return 2.0 * math.prod(out_shape[1:-1]) * (kernel * mid + mid * c_out)
    if isinstance(layer, (layers.Conv2DTranspose, layers.Conv3DTranspose, layers.Conv1DTranspose)):
        return 2.0 * kernel * c_in * c_out * math.prod(in_shape[1:-1])
    groups = getattr(layer, "groups", 1) or 1
    return 2.0 * kernel * (c_in // groups) * c_out * math.prod(out_shape[1:-1])


def _rnn(cell, steps: int, features: int) -> float:
    gates = {"LSTMCell": 4, "GRUCell": 3}.get(type(cell).__name__, 1)
    units = cell.units
    return 2.0 * steps * gates * units * (features + units)


def _convlstm(layer, in_shape, out_shape) -> float:
    # in: [T, H, W, C]; each step convolves the input and the state with 4 gates' kernels.
    steps, c_in = in_shape[0], in_shape[-1]
    filters = layer.filters
    spatial = math.prod(out_shape[-3:-1])
    kernel = math.prod(layer.kernel_size)
    return 2.0 * steps * spatial * kernel * 4 * filters * (c_in + filters)


def _attention(layer, q_shape, out_shape) -> float:
    steps, d_model = q_shape[0], q_shape[-1]
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    proj = 2.0 * steps * d_model * heads * (2 * key_dim + value_dim)      # Q, K, V
    scores = 2.0 * steps * steps * heads * (key_dim + value_dim)         # QK^T and weights.V
    output = 2.0 * steps * heads * value_dim * out_shape[-1]
    return proj + scores + output


def layer_flops(layer, in_shape: tuple, out_shape: tuple) -> float:
    """Forward FLOPs of one call of `layer` on one example (shapes without the batch dim)."""
    from trainer.archs.blocks import PerFrame
    if isinstance(layer, keras.Model):
        return forward_flops(layer)
    if isinstance(layer, (PerFrame, layers.TimeDistributed)):
        return in_shape[0] * layer_flops(layer.layer, in_shape[1:],
                                         tuple(out_shape[1:]))
    if isinstance(layer, layers.Bidirectional):
        return 2 * layer_flops(layer.forward_layer, in_shape, out_shape)
    if isinstance(layer, layers.ConvLSTM2D):
        return _convlstm(layer, in_shape, out_shape)
    if isinstance(layer, layers.RNN):
        return _rnn(layer.cell, in_shape[0], in_shape[-1])
    if hasattr(layer, "kernel_size") and hasattr(layer, "filters"):
        return _conv(layer, (None,) + tuple(in_shape), (None,) + tuple(out_shape))
    if isinstance(layer, layers.Dense):
        return 2.0 * in_shape[-1] * layer.units * math.prod(out_shape[:-1])
    if isinstance(layer, layers.EinsumDense):
        return 2.0 * math.prod(layer.kernel.shape) * math.prod(out_shape[:-1])
    if isinstance(layer, layers.MultiHeadAttention):
        return _attention(layer, in_shape, out_shape)
    return 0.0


def forward_flops(model: keras.Model) -> float:
    """Forward FLOPs of one example through a functional `model` (nested models included)."""
    total = 0.0
    for layer in model.layers:
        for in_shape, out_shape in _node_shapes(layer):
            if isinstance(layer, keras.Model):
                total += forward_flops(layer)
            else:
                total += layer_flops(layer, _dims(in_shape), _dims(out_shape))
    return total


def train_flops_per_window(model: keras.Model) -> float:
    """FLOPs of one training window: forward + backward (TRAIN_FACTOR x forward)."""
    return TRAIN_FACTOR * forward_flops(model)
