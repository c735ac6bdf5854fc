"""The shipped prediction is chosen on validation faces the network has never seen."""

from __future__ import annotations

import keras
import numpy as np

from service.contract import LABELS
from training.config import ModelConfig, load_config
from training.data import Split
from training.model import build_classifier
from training.train import choose_prediction


def test_copies_of_training_faces_take_no_part_in_the_choice() -> None:
    keras.utils.set_random_seed(0)
    classifier = build_classifier(ModelConfig(filters=(8, 16), convs_per_stage=1, dense_units=8))
    faces = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    labels = np.arange(40) % len(LABELS)
    # The first ten validation faces are copies of training faces, labelled with the network's
    # own answers, as memory would have them: left in, they would sharpen the temperature.
    answers = classifier.predict(faces[:10, ..., None].astype(np.float32), verbose=0)
    labels[:10] = answers.argmax(axis=1)
    seen, nothing_seen = Split(faces[:10], labels[:10]), Split(faces[:0], labels[:0])
    validation, config = Split(faces, labels), load_config()

    chosen = choose_prediction(config, classifier, validation, seen)
    unseen_only = choose_prediction(config, classifier, Split(faces[10:], labels[10:]), seen)
    everything = choose_prediction(config, classifier, validation, nothing_seen)

    assert chosen["validation_faces"] == 30
    assert chosen == unseen_only
    assert everything["validation_faces"] == 40
    assert everything["temperature"] != chosen["temperature"]
