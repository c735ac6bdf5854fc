"""Which members, with what weights, combined how: chosen on validation faces.

Greedy forward selection with replacement (Caruana et al., 2004), logit or probability averaging,
flip averaging over the ensemble, and one temperature (`training.calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import softmax

from training.calibrate import fit_temperature, negative_log_likelihood
from training.ensemble_members import PROBABILITY_FLOOR, Answers

Combine = Literal["logits", "probabilities"]
COMBINES: tuple[Combine, ...] = ("logits", "probabilities")
DEFAULT_ROUNDS = 20
"""Greedy rounds; with replacement, a member added k times of n rounds weighs k/n."""
NLL_TOLERANCE = 1e-4
"""A later greedy prefix as accurate as an earlier one must lower the NLL by more than this to be
kept: a member is not added for a rounding-level gain."""


@dataclass(frozen=True)
class Step:
    """The ensemble after one greedy round."""

    added: int
    """Index into the candidates of the member added this round."""
    counts: tuple[int, ...]
    accuracy: float
    nll: float
    """Negative log-likelihood at the temperature fitted for this step."""


@dataclass(frozen=True)
class Choice:
    """What validation chose."""

    combine: Combine
    counts: tuple[int, ...]
    flip_tta: bool
    temperature: float
    accuracy: float
    nll: float
    steps: list[Step]
    chosen_round: int
    """1-based: the greedy round whose ensemble is kept."""
    by_combine: dict[str, dict[str, float]]
    flip: dict[str, float]

    @property
    def weights(self) -> np.ndarray:
        counts = np.asarray(self.counts, dtype=np.float64)
        return counts / counts.sum()


def combined_scores(members: list[Answers], weights: np.ndarray, combine: Combine) -> np.ndarray:
    """The ensemble's scores before its temperature: softmax(scores / T) is its answer."""
    present = [(w, a) for w, a in zip(weights, members, strict=True) if w > 0]
    if combine == "logits":
        return sum(w * a.logits for w, a in present)
    mean = sum(w * a.probabilities for w, a in present)
    return np.log(np.maximum(mean, PROBABILITY_FLOOR))


def accuracy_and_nll(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Accuracy, and the NLL at the temperature fitted on these faces, and that temperature."""
    temperature = fit_temperature(scores, labels)
    accuracy = float((scores.argmax(axis=1) == labels).mean())
    return accuracy, negative_log_likelihood(scores, labels, temperature), temperature


def better(accuracy: float, nll: float, than: tuple[float, float] | None) -> bool:
    if than is None:
        return True
    return accuracy > than[0] or (accuracy == than[0] and nll < than[1] - NLL_TOLERANCE)


def greedy_selection(
    candidates: list[Answers],
    labels: np.ndarray,
    combine: Combine,
    rounds: int,
    max_members: int | None = None,
) -> list[Step]:
    """Caruana's forward selection with replacement: each round adds the candidate that makes the
    ensemble best on validation (accuracy, then calibrated NLL). Once `max_members` distinct
    members are in, later rounds only re-weigh them: every member costs each face its own
    inference, so the cap is the cost budget, and greedy spends it on the members it values most."""
    counts = np.zeros(len(candidates), dtype=int)
    steps = []
    for _ in range(rounds):
        best: tuple[int, float, float] | None = None
        full = max_members is not None and np.count_nonzero(counts) >= max_members
        for index in np.flatnonzero(counts) if full else range(len(candidates)):
            trial = counts.copy()
            trial[index] += 1
            scores = combined_scores(candidates, trial / trial.sum(), combine)
            accuracy, nll, _ = accuracy_and_nll(scores, labels)
            if best is None or better(accuracy, nll, best[1:]):
                best = (index, accuracy, nll)
        index, accuracy, nll = best
        index = int(index)
        counts[index] += 1
        steps.append(Step(index, tuple(int(c) for c in counts), accuracy, nll))
    return steps


def in_given_order(candidates: list[Answers], labels: np.ndarray, combine: Combine) -> list[Step]:
    """Every candidate with equal weight, and the ensemble as each one joins in the order given."""
    steps = []
    for index in range(len(candidates)):
        counts = np.array([1] * (index + 1) + [0] * (len(candidates) - index - 1))
        scores = combined_scores(candidates, counts / counts.sum(), combine)
        accuracy, nll, _ = accuracy_and_nll(scores, labels)
        steps.append(Step(index, tuple(int(c) for c in counts), accuracy, nll))
    return steps


def best_prefix(steps: list[Step]) -> Step:
    """The earliest round no later round beats: members added after it are left out. Every
    member costs a face its own inference, so a round with more members must be more accurate
    to win, not merely better calibrated (the temperature is refitted anyway)."""
    chosen = steps[0]
    for step in steps[1:]:
        if len(members_used(step.counts)) > len(members_used(chosen.counts)):
            wins = step.accuracy > chosen.accuracy
        else:
            wins = better(step.accuracy, step.nll, _key(chosen))
        if wins:
            chosen = step
    return chosen


def choose(
    plain: list[Answers],
    mirrored: list[Answers],
    labels: np.ndarray,
    rounds: int = DEFAULT_ROUNDS,
    combines: tuple[Combine, ...] = COMBINES,
    equal_weights: bool = False,
    max_members: int | None = None,
) -> Choice:
    """Weights, combination, flip averaging and temperature, all chosen on validation.

    The selection runs twice, on the members' answers and on their answers averaged over each
    face and its mirror image, each with its own weights: weights chosen on unflipped answers
    undersold flip averaging for members that do not flip themselves (docs/experiments.md, "What
    the members' own flip averaging buys"). Flip averaging doubles the cost of every face, so it
    must win on accuracy outright."""
    plain_pick = _select(plain, labels, rounds, combines, equal_weights, max_members)
    flip_pick = _select(
        flip_averaged(plain, mirrored), labels, rounds, combines, equal_weights, max_members
    )
    flip_tta = flip_pick.accuracy > plain_pick.accuracy
    pick = flip_pick if flip_tta else plain_pick
    return Choice(
        combine=pick.combine,
        counts=pick.chosen.counts,
        flip_tta=flip_tta,
        temperature=pick.temperature,
        accuracy=pick.accuracy,
        nll=pick.nll,
        steps=pick.steps,
        chosen_round=pick.steps.index(pick.chosen) + 1,
        by_combine=pick.by_combine,
        flip={
            "accuracy_plain": plain_pick.accuracy,
            "accuracy_flip": flip_pick.accuracy,
            "nll_plain": plain_pick.nll,
            "nll_flip": flip_pick.nll,
            "counts_plain": list(plain_pick.chosen.counts),
            "counts_flip": list(flip_pick.chosen.counts),
        },
    )


@dataclass(frozen=True)
class _Pick:
    """The best selection on one set of answers."""

    combine: Combine
    steps: list[Step]
    chosen: Step
    accuracy: float
    nll: float
    temperature: float
    by_combine: dict[str, dict[str, float]]


def _select(
    answers: list[Answers],
    labels: np.ndarray,
    rounds: int,
    combines: tuple[Combine, ...],
    equal_weights: bool,
    max_members: int | None,
) -> _Pick:
    by_combine: dict[str, tuple[list[Step], Step]] = {}
    for combine in combines:
        if equal_weights:
            steps = in_given_order(answers, labels, combine)
            by_combine[combine] = (steps, steps[-1])
        else:
            steps = greedy_selection(answers, labels, combine, rounds, max_members)
            by_combine[combine] = (steps, best_prefix(steps))
    combine = combines[0]
    for other in combines[1:]:
        if better(*_key(by_combine[other][1]), _key(by_combine[combine][1])):
            combine = other
    steps, chosen = by_combine[combine]
    weights = np.asarray(chosen.counts, dtype=np.float64) / sum(chosen.counts)
    accuracy, nll, temperature = accuracy_and_nll(
        combined_scores(answers, weights, combine), labels
    )
    return _Pick(
        combine=combine,
        steps=steps,
        chosen=chosen,
        accuracy=accuracy,
        nll=nll,
        temperature=temperature,
        by_combine={
            name: {
                "accuracy": best.accuracy,
                "nll": best.nll,
                "members": len(members_used(best.counts)),
            }
            for name, (_, best) in by_combine.items()
        },
    )


def _key(step: Step) -> tuple[float, float]:
    return step.accuracy, step.nll


def members_used(counts: tuple[int, ...]) -> list[int]:
    return [index for index, count in enumerate(counts) if count]


def flip_averaged(plain: list[Answers], mirrored: list[Answers]) -> list[Answers]:
    """Each member's answers averaged over the faces and their mirror images."""
    return [p.averaged_with(m) for p, m in zip(plain, mirrored, strict=True)]


def reference_probabilities(
    plain: list[Answers], mirrored: list[Answers] | None, choice: Choice
) -> np.ndarray:
    """What the ensemble graph must answer, from its members' answers one by one."""
    members = plain if mirrored is None else flip_averaged(plain, mirrored)
    scores = combined_scores(members, choice.weights, choice.combine)
    return softmax(scores / choice.temperature, axis=1)
