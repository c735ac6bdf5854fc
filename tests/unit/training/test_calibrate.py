"""The temperature is fitted on validation faces the network has never seen."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from contract.emotion import LABELS
from training.calibrate import fit_temperature
from training.config import ModelConfig, load_config
from training.data import Split
from training.model import build_classifier
from training.train import choose_prediction, validation_logits


def test_copies_of_training_faces_take_no_part_in_the_temperature() -> None:
    keras.utils.set_random_seed(0)
    classifier = build_classifier(ModelConfig(filters=(8, 16), convs_per_stage=1, dense_units=8))
    faces = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    labels = np.arange(40) % len(LABELS)
    # The first ten validation faces are copies of training faces, labelled with the network's
    # own answers, as memory would have them: left in, they would sharpen the temperature.
    answers = classifier.predict(faces[:10, ..., None].astype(np.float32), verbose=0)
    labels[:10] = answers.argmax(axis=1)
    validation, seen, config = Split(faces, labels), Split(faces[:10], labels[:10]), load_config()

    chosen = choose_prediction(config, classifier, validation, seen)
    nothing_seen = choose_prediction(config, classifier, validation, Split(faces[:0], labels[:0]))

    unseen_logits = validation_logits(classifier, faces[10:], flip_tta=chosen["flip_tta"])
    assert chosen["temperature"] == pytest.approx(fit_temperature(unseen_logits, labels[10:]))
    assert chosen["temperature_faces"] == 30
    assert nothing_seen["temperature_faces"] == 40
    assert nothing_seen["temperature"] != chosen["temperature"]
    # Flip averaging is chosen, and its accuracies reported, on all of validation either way.
    for key in ("flip_tta", "validation_accuracy_plain", "validation_accuracy_flip"):
        assert chosen[key] == nothing_seen[key]
