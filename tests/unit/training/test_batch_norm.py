"""The fused batch norm trains exactly as Keras's own: same outputs, gradients, moving statistics
and weights, in both precisions; it only takes TensorFlow's one-pass kernel to get there."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.batch_norm import BatchNormalization
from training.config import ModelConfig
from training.model import build_classifier

SHAPE = (8, 6, 6, 5)


@pytest.fixture(params=["float32", "mixed_bfloat16"])
def policy(request: pytest.FixtureRequest) -> Iterator[str]:
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy("float32")


def one_training_step(layer: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """Output, gradients (input, gamma, beta) and moving statistics after one batch."""
    rng = np.random.default_rng(0)
    batch = tf.constant(rng.normal(3.0, 2.0, SHAPE).astype(np.float32))
    upstream = tf.constant(rng.normal(size=SHAPE).astype(np.float32))
    layer.build(SHAPE)
    layer.gamma.assign(np.linspace(0.5, 1.5, SHAPE[-1]))
    layer.beta.assign(np.linspace(-1.0, 1.0, SHAPE[-1]))
    with tf.GradientTape() as tape:
        tape.watch(batch)
        output = layer(batch, training=True)
        loss = tf.reduce_sum(tf.cast(output, tf.float32) * upstream)
    gradients = tape.gradient(loss, [batch, layer.gamma, layer.beta])
    return [
        np.asarray(tf.cast(output, tf.float32)),
        *(np.asarray(gradient) for gradient in gradients),
        layer.moving_mean.numpy(),
        layer.moving_variance.numpy(),
    ]


def test_trains_as_keras_batch_norm_does(policy: str) -> None:
    keras_layer = keras.layers.BatchNormalization(momentum=0.5)
    fused_layer = BatchNormalization(momentum=0.5)
    expected, got = one_training_step(keras_layer), one_training_step(fused_layer)
    names = ["output", "input gradient", "gamma gradient", "beta gradient", "mean", "variance"]
    for name, want, have in zip(names, expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4, err_msg=f"{policy}: {name}")
    # The moving variance checked above is the biased batch variance, as Keras keeps it: the
    # kernel's Bessel-corrected one would be 1/287 larger here, far above the tolerance.


def test_inference_is_keras_own() -> None:
    layer = BatchNormalization()
    layer.build(SHAPE)
    layer.moving_mean.assign(np.full(SHAPE[-1], 2.0))
    layer.moving_variance.assign(np.full(SHAPE[-1], 4.0))
    batch = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    reference = keras.layers.BatchNormalization()
    reference.build(SHAPE)
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(batch, training=False), reference(batch, training=False))


def test_weights_load_into_a_network_built_with_keras_batch_norm(tmp_path) -> None:
    """Checkpoints and weights written before this layer existed still load, and vice versa."""
    config = ModelConfig(filters=(8, 16), convs_per_stage=1, dense_units=8)
    fused = build_classifier(config)
    assert any(isinstance(layer, BatchNormalization) for layer in fused.layers)
    rng = np.random.default_rng(2)
    fused.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in fused.weights])
    fused.save_weights(str(tmp_path / "fused.weights.h5"))

    plain = keras.models.clone_model(
        fused,
        clone_function=lambda layer: (
            keras.layers.BatchNormalization.from_config(layer.get_config())
            if isinstance(layer, BatchNormalization)
            else layer.__class__.from_config(layer.get_config())
        ),
    )
    assert not any(isinstance(layer, BatchNormalization) for layer in plain.layers)
    plain.load_weights(str(tmp_path / "fused.weights.h5"))
    faces = rng.integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    np.testing.assert_array_equal(plain.predict(faces, verbose=0), fused.predict(faces, verbose=0))
