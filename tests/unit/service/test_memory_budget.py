"""The decoding memory budget: reservations share a capacity across threads, wait a bounded time
for room, and a reservation larger than the whole capacity runs alone."""

from __future__ import annotations

import threading

import pytest

from service.memory_budget import BudgetExhausted, MemoryBudget


def test_reservations_that_fit_are_held_together_and_given_back():
    budget = MemoryBudget(100, wait_seconds=0.0)
    with budget.reserve(60), budget.reserve(40):
        assert budget.reserved_bytes == 100
    assert budget.reserved_bytes == 0


def test_a_reservation_that_does_not_fit_within_the_wait_is_refused():
    budget = MemoryBudget(100, wait_seconds=0.05)
    with budget.reserve(60):
        with pytest.raises(BudgetExhausted), budget.reserve(41):
            pass
        assert budget.reserved_bytes == 60  # the refused one took nothing


def test_a_waiting_reservation_goes_ahead_when_room_is_given_back():
    budget = MemoryBudget(100, wait_seconds=30.0)
    first_held, second_held = threading.Event(), threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with budget.reserve(80):
            first_held.set()
            release_first.wait()

    def second() -> None:
        with budget.reserve(80):
            second_held.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    first_held.wait()
    threads[1].start()
    assert not second_held.wait(0.2)  # no room while the first holds 80 of 100
    release_first.set()
    assert second_held.wait(30)
    for thread in threads:
        thread.join()
    assert budget.reserved_bytes == 0


def test_a_reservation_over_the_capacity_runs_alone():
    budget = MemoryBudget(100, wait_seconds=0.05)
    with budget.reserve(10**9):
        assert budget.reserved_bytes == 100
        with pytest.raises(BudgetExhausted), budget.reserve(1):
            pass
    with budget.reserve(10**9):
        pass


def test_a_reservation_that_must_not_wait_is_refused_at_once():
    budget = MemoryBudget(100, wait_seconds=3600.0)
    with budget.reserve(60):
        with pytest.raises(BudgetExhausted), budget.reserve(41, wait=False):
            pass
        with budget.reserve(40, wait=False):
            assert budget.reserved_bytes == 100


def test_large_reservations_held_or_awaited_are_bounded_and_one_more_is_refused_at_once():
    """With `max_large` 2 (three worker threads): one large reservation holds the budget, a
    second waits for it in its thread; a third is refused at once instead of taking the last
    thread to wait in, and a small one still goes ahead beside them."""
    budget = MemoryBudget(100, wait_seconds=3600.0, max_large=2)
    holding, release = threading.Event(), threading.Event()
    waiting_done = threading.Event()

    def hold() -> None:
        with budget.reserve(60):
            holding.set()
            release.wait()

    def wait_behind() -> None:
        with budget.reserve(60):
            waiting_done.set()

    threads = [threading.Thread(target=hold), threading.Thread(target=wait_behind)]
    threads[0].start()
    holding.wait()
    threads[1].start()
    assert not waiting_done.wait(0.2)  # the second waits for room
    with pytest.raises(BudgetExhausted, match="large decodes"), budget.reserve(30):
        pass  # 30 is large (over a quarter of 100); two are already under way
    with budget.reserve(20):  # small: goes ahead at once
        assert budget.reserved_bytes == 80
    release.set()
    assert waiting_done.wait(30)
    for thread in threads:
        thread.join()
    with budget.reserve(60), budget.reserve(30):  # the slots came back
        pass
    assert budget.reserved_bytes == 0
