"""The network, and nothing else: config -> Keras model.

Backend-neutral Keras 3 (no TensorFlow import), so the same code trains on TensorFlow here and on
JAX on a GPU machine. Pixel scaling lives inside the model, so every model built here takes raw
0-255 pixels, which is what the exported ONNX graph and the service feed it.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from contract.emotion import INPUT_SIZE, LABELS
from training.batch_norm import BatchNormalization
from training.config import AugmentConfig, Config, ModelConfig

IMAGE_SHAPE = (INPUT_SIZE, INPUT_SIZE, 1)


def build_classifier(config: ModelConfig) -> keras.Model:
    """VGG-style stages of 3x3 convolutions with batch norm, ReLU, pooling and dropout.

    The layer named `logits` feeds the softmax, so calibration and test-time augmentation can
    work on logits without rebuilding the network. It always takes whole 48x48 faces, the
    contract's input; with `input_crop` its first layer keeps their centre.
    """
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = inputs
    if config.input_crop:
        margin = (INPUT_SIZE - config.input_crop) // 2
        x = layers.Cropping2D(margin, name="centre_crop")(x)
    x = layers.Rescaling(1.0 / 255.0, name="pixel_scale")(x)
    stages = zip(config.filters, config.stage_convs(), strict=True)
    for stage, (filters, convs) in enumerate(stages, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=f"stage{stage}_conv{conv}",
            )(x)
            x = BatchNormalization(name=f"stage{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
        if config.stage_dropout:
            x = layers.Dropout(config.stage_dropout, name=f"stage{stage}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    if config.dense_units:
        x = layers.Dense(config.dense_units, use_bias=False, name="dense")(x)
        x = BatchNormalization(name="dense_bn")(x)
        x = layers.ReLU(name="dense_relu")(x)
    if config.head_dropout:
        x = layers.Dropout(config.head_dropout, name="head_dropout")(x)
    logits = layers.Dense(len(LABELS), dtype="float32", name="logits")(x)
    probabilities = layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="classifier")


ERASED_AREA = (0.02, 0.33)
"""Share of the image a random-erasing patch covers (Zhong et al., 2017's range)."""


def build_augmenter(config: AugmentConfig) -> keras.Sequential:
    """On-the-fly augmentation; active only in training, so it never reaches the export.

    Runs in float32 whatever the precision policy: interpolating pixels in bfloat16 would blur
    the augmentation for no speed gain.
    """
    steps: list[layers.Layer] = []
    if config.flip:
        steps.append(layers.RandomFlip("horizontal", dtype="float32"))
    if config.rotation_degrees:
        steps.append(
            layers.RandomRotation(
                config.rotation_degrees / 360.0, fill_mode="reflect", dtype="float32"
            )
        )
    if config.shift:
        steps.append(
            layers.RandomTranslation(
                config.shift, config.shift, fill_mode="reflect", dtype="float32"
            )
        )
    if config.zoom:
        steps.append(layers.RandomZoom(config.zoom, fill_mode="reflect", dtype="float32"))
    if config.contrast:
        steps.append(layers.RandomContrast(config.contrast, value_range=(0, 255), dtype="float32"))
    if config.erasing:
        # A fixed (p, p) range: a single float would draw the probability itself from [0, p].
        # The area range is stated, not left to Keras's default, because the config documents it.
        steps.append(
            layers.RandomErasing(
                (config.erasing, config.erasing),
                scale=ERASED_AREA,
                value_range=(0, 255),
                dtype="float32",
            )
        )
    return keras.Sequential(steps, name="augment")


def build_training_model(model: ModelConfig, augment: AugmentConfig) -> keras.Model:
    """Augmentation in front of the classifier; `get_layer("classifier")` gives the part to ship."""
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    classifier = build_classifier(model)
    return keras.Model(inputs, classifier(build_augmenter(augment)(inputs)), name="trainer")


def logits_model(classifier: keras.Model) -> keras.Model:
    """The classifier up to its `logits` layer."""
    return keras.Model(classifier.input, classifier.get_layer("logits").output)


def shipped_logits(
    logits_fn: keras.Model, images: keras.KerasTensor, flip_tta: bool
) -> keras.KerasTensor:
    """The logits the shipped model softmaxes: averaged with the mirror image's when `flip_tta`.

    One function for validation-time decisions, the exported graph and its parity check, so the
    numbers chosen on validation are the numbers the service computes.
    """
    if not flip_tta:
        return logits_fn(images, training=False)
    # One batch of 2N (originals, then mirrors) runs faster than two batches of N.
    mirrored = keras.ops.flip(images, axis=2)
    both = logits_fn(keras.ops.concatenate([images, mirrored], axis=0), training=False)
    plain_logits, mirrored_logits = keras.ops.split(both, 2, axis=0)
    return (plain_logits + mirrored_logits) / 2.0


def calibrated_probabilities(
    logits_fn: keras.Model, images: keras.KerasTensor, temperature: float, flip_tta: bool
) -> keras.KerasTensor:
    """The shipped prediction: shipped logits / temperature, softmax."""
    return keras.ops.softmax(shipped_logits(logits_fn, images, flip_tta) / temperature, axis=-1)


def as_images(x: np.ndarray) -> np.ndarray:
    """uint8 N x 48 x 48 -> float32 N x 48 x 48 x 1 raw pixels, the model's input."""
    return x[..., None].astype(np.float32)


def float32_classifier(config: Config) -> keras.Model:
    """The classifier rebuilt in float32, for trained weights to be put into.

    A graph traced under mixed_bfloat16 converts to ONNX ops that onnxruntime refuses; the same
    architecture in float32 with the trained (float32-stored) weights converts cleanly.
    """
    keras.mixed_precision.set_dtype_policy("float32")
    return build_classifier(config.model)


def load_float32_classifier(config: Config, weights: Path) -> keras.Model:
    classifier = float32_classifier(config)
    classifier.load_weights(str(weights))
    return classifier
