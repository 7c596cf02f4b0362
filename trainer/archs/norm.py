"""Batch normalization that trains with TensorFlow's fused kernel.

Keras 3 computes batch-norm statistics with separate element-wise ops, and with
`synchronized=True` (which the architectures use, so that MirroredStrategy pools statistics
over replicas) it also builds an activation-sized tensor of ones to count elements, even on
one replica. On a CPU those memory-bound ops were ~20% of a conv3d training step (BENCHMARKS 6).
`BatchNorm` runs the same normalization through `FusedBatchNormV3` (one kernel forward, one
backward, oneDNN's where it is on) whenever the statistics are this replica's own: a single
replica, or `synchronized=False`. Across several replicas with `synchronized=True` it is
Keras's own layer, unchanged. Weights, their names and the moving-average update are Keras's.
"""
from __future__ import annotations

import keras
from keras import layers

MIN_EPSILON = 1.001e-5  # the fused kernel's smallest epsilon (it raises smaller ones to it)


@keras.saving.register_keras_serializable(package="clipforge")
class BatchNorm(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments and weights) over a fused kernel.

    Fused for float32 channels-last inputs of rank 4 or 5, without a mask or renorm, with an
    epsilon of at least MIN_EPSILON, on the TensorFlow backend, when the batch statistics need
    no all-reduce; otherwise the Keras computation runs. The fused kernel's batch variance carries Bessel's correction; it is
    taken out, so the moving variance follows the same update as Keras's layer.
    """

    def _fusable(self, inputs, mask) -> bool:
        if keras.backend.backend() != "tensorflow" or mask is not None or self.renorm:
            return False
        rank = len(inputs.shape)
        if rank not in (4, 5) or self.axis not in (-1, rank - 1):
            return False
        if inputs.dtype != "float32" or self.compute_dtype != "float32" or self.epsilon < MIN_EPSILON:
            return False
        if not self.synchronized:
            return True
        import tensorflow as tf
        ctx = tf.distribute.get_replica_context()
        return ctx is not None and ctx.num_replicas_in_sync == 1

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf
        shape = tf.shape(inputs)
        channels = inputs.shape[-1]
        # Every axis but the channels is reduced over, so a 5-D window folds into 4-D NHWC.
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, shape[2], shape[3], channels])
        gamma = self.gamma if self.scale else tf.ones([channels], inputs.dtype)
        beta = self.beta if self.center else tf.zeros([channels], inputs.dtype)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            count = tf.cast(tf.size(x) // channels, variance.dtype)
            variance = variance * tf.math.divide_no_nan(count - 1.0, count)  # back to the biased variance
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean, variance=self.moving_variance, epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.reshape(y, shape)
