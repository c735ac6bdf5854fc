"""Batch normalisation that trains in TensorFlow's fused kernel, with Keras's own arithmetic.

Keras 3 normalises a training batch in separate float32 ops (cast, mean, variance, normalise,
cast back) that TensorFlow runs one after the other over every activation, forward and backward.
TensorFlow's FusedBatchNormV3 does the same normalisation in one pass each way (oneDNN on these
CPUs), which takes a sixth to a fifth off the CPU time of a training step (measured with
`python -m training speed`: docs/experiments.md, 2026-12-06).

The layer is Keras's `BatchNormalization` in every other respect: the same variables under the
same names (weights files and checkpoints load either way), the same moving-average update from
the biased batch variance, and Keras's own code outside TensorFlow training (JAX on a GPU machine,
inference, export), so the exported graph does not change.
"""

from __future__ import annotations

from typing import Any

import keras


class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, trained through TensorFlow's fused kernel where it can."""

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # float32 in and out of the kernel, as Keras computes it: FusedBatchNormV3 in bfloat16
        # has no oneDNN kernel and runs slower than Keras's unfused float32 ops.
        normalised, mean, unbiased_variance, *_ = tf.compat.v1.nn.fused_batch_norm(
            tf.cast(inputs, tf.float32),
            tf.cast(self.gamma, tf.float32) if self.scale else tf.ones_like(self.moving_mean),
            tf.cast(self.beta, tf.float32) if self.center else tf.zeros_like(self.moving_mean),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the batch variance with Bessel's correction; Keras's moving average
        # takes the biased one (the one both normalise with).
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = unbiased_variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return keras.ops.cast(normalised, self.compute_dtype)

    def _fusable(self, inputs: Any, training: bool | None, mask: Any) -> bool:
        """Training a plain 4-D channels-last batch norm on TensorFlow: what the kernel does."""
        return bool(
            training
            and self.trainable
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )
