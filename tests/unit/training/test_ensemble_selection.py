"""How the ensemble builder chooses on validation answers: here, flip averaging against weights
chosen without it, on answers made to show the difference."""

from __future__ import annotations

import numpy as np

from training.ensemble_members import Answers
from training.ensemble_selection import choose, greedy_selection, members_used

FACES = 200


def answers(logits: np.ndarray) -> Answers:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return Answers(logits, exp / exp.sum(axis=1, keepdims=True))


def test_flip_averaging_is_weighed_with_weights_chosen_for_it():
    """Member A is right on 60 % of faces, the same on mirror images. Member B alone is right
    on none, but its two wrong guesses differ between a face and its mirror image, so averaged
    over both it is right on all of them. Weights chosen without flip averaging keep A alone,
    and at those weights flip averaging adds nothing; chosen with it, B wins outright."""
    labels = np.arange(FACES) % 7
    rng = np.random.default_rng(0)
    a = np.zeros((FACES, 7))
    right = rng.random(FACES) < 0.6
    a[np.arange(FACES), np.where(right, labels, (labels + 3) % 7)] = 2.0
    b_face, b_mirror = np.zeros((FACES, 7)), np.zeros((FACES, 7))
    b_face[np.arange(FACES), labels] = 1.0
    b_mirror[np.arange(FACES), labels] = 1.0
    b_face[np.arange(FACES), (labels + 1) % 7] = 1.2
    b_mirror[np.arange(FACES), (labels + 2) % 7] = 1.2
    plain = [answers(a), answers(b_face)]
    mirrored = [answers(a), answers(b_mirror)]
    choice = choose(plain, mirrored, labels, combines=("logits",))
    assert choice.flip["counts_plain"][1] == 0  # without flips, B adds nothing
    assert choice.flip_tta and choice.counts[1] > 0
    assert choice.accuracy == 1.0 and choice.flip["accuracy_plain"] < 0.7


def test_a_member_cap_keeps_greedy_s_first_choices_and_only_reweighs_them():
    """Five noisy members, each right on a different 55 % of faces: uncapped, greedy takes more
    than two. Capped at two, it takes the same first two and spends every later round on them."""
    labels = np.arange(FACES) % 7
    rng = np.random.default_rng(1)
    members = []
    for _ in range(5):
        logits = rng.normal(0, 1, (FACES, 7))
        right = rng.random(FACES) < 0.55
        logits[np.flatnonzero(right), labels[right]] += 3.0
        members.append(answers(logits))
    uncapped = greedy_selection(members, labels, "logits", rounds=12)
    capped = greedy_selection(members, labels, "logits", rounds=12, max_members=2)
    assert len(members_used(uncapped[-1].counts)) > 2
    first_two = members_used(capped[1].counts)
    assert len(first_two) == 2 and capped[:2] == uncapped[:2]
    assert all(members_used(step.counts) == first_two for step in capped[1:])
    assert sum(capped[-1].counts) == 12
    choice = choose(members, members, labels, combines=("logits",), max_members=2)
    assert len(members_used(choice.counts)) <= 2
