"""A meter that fails mid-run: the hardware's failure is said as such, a meter's bug as a bug."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from backends.base import Meter, MeterInfo, MeterUnavailable, Reading
from tracker import Tracker


class FailingMeter(Meter):
    """A power meter whose reads raise ``error`` once ``broken`` is set."""

    def __init__(self, error: Exception) -> None:
        self.info = MeterInfo("gpu0", "gpu", "test board", "power", host_level=False)
        self.error = error
        self.broken = False

    def read(self) -> Reading:
        if self.broken:
            raise self.error
        return Reading(time.monotonic(), power_w=50.0)


@pytest.mark.parametrize(
    ("error", "said", "bug"),
    [
        (MeterUnavailable("gpu0: GPU is lost"), "stopped working and is no longer measured", False),
        (ZeroDivisionError("division by zero"), "bug in meter FailingMeter", True),
    ],
    ids=["hardware", "bug"],
)
def test_a_failing_meter_is_reported_for_what_it_is(
    error: Exception, said: str, bug: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    meter = FailingMeter(error)
    tracker = Tracker("fail", tmp_path, meters=[meter], interval=0.05, verbose=0)
    with tracker:
        with tracker.epoch():
            time.sleep(0.1)
        meter.broken = True
        with tracker.epoch():
            time.sleep(0.1)
    first, second = tracker.epochs
    assert first.gpu_energy_j is not None and first.gpu_energy_j > 0
    assert [d.method for d in second.devices] == ["failed"]
    warnings = [w for w in tracker.summary.warnings if "gpu0" in w]
    assert len(warnings) == 1 and said in warnings[0] and str(error) in warnings[0]
    tracebacks = [r for r in caplog.records if r.exc_info and r.exc_info[1] is error]
    assert len(tracebacks) == (1 if bug else 0)
