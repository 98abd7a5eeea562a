"""The rate meter's throttling, speed and ETA, and the cancel token."""

from __future__ import annotations

import pytest

from flasher.errors import Cancelled
from flasher.events import CancelToken, Phase, RateMeter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_meter_throttles_between_intervals() -> None:
    clock = FakeClock()
    meter = RateMeter(Phase.WRITING, 1000, interval_s=0.5, clock=clock)
    first = meter.update(10)
    clock.now += 0.1
    assert first is not None
    assert meter.update(20) is None
    clock.now += 0.5
    assert meter.update(30) is not None


def test_rate_meter_always_reports_completion() -> None:
    clock = FakeClock()
    meter = RateMeter(Phase.WRITING, 100, interval_s=10, clock=clock)
    meter.update(1)
    clock.now += 0.01
    done = meter.update(100)
    assert done is not None and done.done_bytes == 100 and done.fraction == 1.0


def test_rate_meter_computes_speed_and_eta() -> None:
    clock = FakeClock()
    meter = RateMeter(Phase.DOWNLOADING, 1000, interval_s=0, clock=clock, target="t")
    clock.now += 2.0
    ev = meter.update(200)
    assert ev is not None
    assert ev.speed_bps == pytest.approx(100.0)
    assert ev.eta_s == pytest.approx(8.0)
    assert ev.target == "t"


def test_rate_meter_without_total_has_no_eta() -> None:
    clock = FakeClock()
    meter = RateMeter(Phase.UNPACKING, None, interval_s=0, clock=clock)
    clock.now += 1
    ev = meter.update(50)
    assert ev is not None and ev.eta_s is None and ev.fraction is None


def test_cancel_token_raises_after_cancel_and_runs_callbacks_once() -> None:
    token = CancelToken()
    calls: list[int] = []
    token.on_cancel(lambda: calls.append(1))
    token.check()
    token.cancel()
    token.cancel()
    assert calls == [1]
    with pytest.raises(Cancelled):
        token.check()
    token.on_cancel(lambda: calls.append(2))
    assert calls == [1, 2]
