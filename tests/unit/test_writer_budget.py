"""The buffer budget a helper's jobs share: each job sizes its I/O pieces for every target
running, and a session's jobs for no fewer than its floor."""

from __future__ import annotations

import pytest

from flasher.writer.helper_session import SESSION_BUDGET_TARGETS, SharedBudget
from flasher.writer.plan import piece_bytes_for

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("floor", "jobs", "expected"),
    [
        (0, [1], [1]),
        (0, [1, 2, 3], [1, 3, 6]),
        (16, [1], [16]),
        (16, [8, 8, 4], [16, 16, 20]),
    ],
    ids=["alone", "adds-up", "floor", "beyond-floor"],
)
def test_each_job_is_sized_for_every_target_running(
    floor: int, jobs: list[int], expected: list[int]
) -> None:
    budget = SharedBudget(floor)
    assert [budget.take(n) for n in jobs] == expected


def test_targets_given_back_no_longer_count() -> None:
    budget = SharedBudget()
    budget.take(4)
    budget.take(2)
    budget.give_back(4)
    assert budget.take(1) == 3


def test_a_session_gives_every_job_the_smallest_pieces() -> None:
    sized_for = SharedBudget(SESSION_BUDGET_TARGETS).take(1)
    assert piece_bytes_for(sized_for, 4 * MiB, 4) == 1 * MiB
