"""The done page's summary line is honest: the average speed is over the writing only (not the
download, the preparation or the read-back) and the time is the flash's own, with the time
spent before it named apart. A clock is stepped by hand so the numbers are exact."""

from __future__ import annotations

import pytest

from flasher.events import Phase, PhaseChanged, Progress
from flasher.gui import progress
from flasher.gui.progress import JobProgress, overall_line
from flasher.writer.job import TargetResult

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def _two_cards_flashed(clock: Clock) -> JobProgress:
    """40 s of download and preparation, 10 s writing 25 MB to each of two cards at once,
    then 5 s reading them back."""
    job = JobProgress.start([("/dev/sdb", "card b", False), ("/dev/sdc", "card c", False)])
    job.apply(PhaseChanged(Phase.DOWNLOADING))
    clock.now_s += 40
    for path in ("/dev/sdb", "/dev/sdc"):
        job.apply(PhaseChanged(Phase.WRITING, target=path))
    for step in range(1, 11):
        clock.now_s += 1
        for path in ("/dev/sdb", "/dev/sdc"):
            job.apply(Progress(Phase.WRITING, step * 25 * MB // 10, 25 * MB, target=path))
    for path in ("/dev/sdb", "/dev/sdc"):
        job.apply(PhaseChanged(Phase.VERIFYING, target=path))
    clock.now_s += 5
    for path in ("/dev/sdb", "/dev/sdc"):
        job.apply(Progress(Phase.VERIFYING, 25 * MB, 25 * MB, target=path))
    job.finish(
        [TargetResult(p, True, bytes_written=25 * MB, verified=True) for p in job.targets],
        cancelled=False,
    )
    return job


def test_average_speed_counts_only_the_writing(clock: Clock) -> None:
    job = _two_cards_flashed(clock)
    assert job.average_speed_bps == pytest.approx(50 * MB / 10)


def test_flash_time_leaves_out_the_preparation(clock: Clock) -> None:
    job = _two_cards_flashed(clock)
    assert job.flash_s == pytest.approx(15)
    assert job.elapsed_s == pytest.approx(55)


def test_done_line_names_bytes_speed_flash_time_and_preparation(clock: Clock) -> None:
    job = _two_cards_flashed(clock)
    assert overall_line(job) == (
        "50.0 MB written at 5.0 MB/s average · flashed in 15 s (after 40 s preparing the image)"
    )


def test_a_write_too_short_to_measure_gives_no_speed(clock: Clock) -> None:
    job = JobProgress.start([("/tmp/card.img", "card.img", True)])
    job.apply(PhaseChanged(Phase.WRITING, target="/tmp/card.img"))
    job.apply(Progress(Phase.WRITING, 5 * MB, 5 * MB, target="/tmp/card.img"))
    job.apply(PhaseChanged(Phase.DONE, target="/tmp/card.img"))
    job.finish([TargetResult("/tmp/card.img", True, bytes_written=5 * MB)], cancelled=False)
    assert job.average_speed_bps is None
    assert overall_line(job) == "5.0 MB written · flashed in under 1 s"


def test_running_line_shows_the_writing_average(clock: Clock) -> None:
    job = JobProgress.start([("/dev/sdb", "card b", False)])
    job.apply(PhaseChanged(Phase.WRITING, target="/dev/sdb"))
    clock.now_s += 2
    job.apply(Progress(Phase.WRITING, 20 * MB, 40 * MB, target="/dev/sdb"))
    assert overall_line(job) == "25% · 10.0 MB/s writing average · elapsed: 2 s"
