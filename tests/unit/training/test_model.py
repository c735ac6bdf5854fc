"""The network follows its config: stages, convolutions per stage, raw-pixel input, logits."""

from __future__ import annotations

import keras
import numpy as np

from contract.emotion import LABELS
from training.config import AugmentConfig, ModelConfig
from training.model import build_augmenter, build_classifier, logits_model


def conv_names(config: ModelConfig) -> list[str]:
    classifier = build_classifier(config)
    return [
        layer.name
        for layer in classifier.layers
        if layer.name.endswith(tuple("123456789")) and "_conv" in layer.name
    ]


def test_convolutions_per_stage_follow_the_config() -> None:
    names = conv_names(ModelConfig(filters=(8, 16, 32), convs_per_stage=(1, 2, 3), dense_units=0))
    assert names == [
        "stage1_conv1",
        "stage2_conv1",
        "stage2_conv2",
        "stage3_conv1",
        "stage3_conv2",
        "stage3_conv3",
    ]


def test_classifier_takes_raw_pixels_and_answers_probabilities() -> None:
    classifier = build_classifier(ModelConfig(filters=(8, 16), convs_per_stage=1, dense_units=8))
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    probabilities = np.asarray(classifier.predict(faces, verbose=0))
    assert probabilities.shape == (3, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    logits = np.asarray(logits_model(classifier).predict(faces, verbose=0))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(exp / exp.sum(axis=1, keepdims=True), probabilities, atol=1e-5)


def test_random_erasing_covers_part_of_some_images_in_training_only() -> None:
    images = np.full((64, 48, 48, 1), 128.0, dtype="float32")
    augmenter = build_augmenter(
        AugmentConfig(flip=False, shift=0, rotation_degrees=0, zoom=0, erasing=0.5)
    )
    erased = np.abs(np.asarray(augmenter(images, training=True)) - images).reshape(64, -1) > 0
    touched = erased.any(axis=1)
    assert 10 < touched.sum() < 54, "about half the images should have a patch erased"
    assert erased[touched].mean() < 0.5, "a patch, not the whole image"
    assert np.array_equal(np.asarray(augmenter(images, training=False)), images)
    default = build_augmenter(AugmentConfig())
    assert not any(isinstance(layer, keras.layers.RandomErasing) for layer in default.layers)


def test_a_cropping_classifier_takes_whole_faces_and_reads_only_their_centre() -> None:
    classifier = build_classifier(
        ModelConfig(filters=(8, 16), convs_per_stage=1, dense_units=8, input_crop=40)
    )
    assert classifier.input_shape == (None, 48, 48, 1)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    other_borders = faces.copy()
    other_borders[:, :4] = 255 - other_borders[:, :4]
    other_borders[:, :, -4:] = 0
    other_centres = faces.copy()
    other_centres[:, 20:28, 20:28] = 255 - other_centres[:, 20:28, 20:28]
    predict = lambda x: np.asarray(classifier.predict(x, verbose=0))  # noqa: E731
    np.testing.assert_array_equal(predict(other_borders), predict(faces))
    assert not np.allclose(predict(other_centres), predict(faces))
