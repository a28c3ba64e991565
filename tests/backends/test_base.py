"""The meter contract's error classes, and how OS errors become them."""

from __future__ import annotations

import errno

import pytest

import backends
from backends.base import (
    MeterError,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
    os_meter_error,
)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOENT, MeterUnavailable),
        (errno.ENODEV, MeterUnavailable),
        (errno.ENXIO, MeterUnavailable),
        (errno.ENOTDIR, MeterUnavailable),
        (errno.EACCES, MeterPermissionError),
        (errno.EPERM, MeterPermissionError),
        (errno.EINVAL, MeterReadError),
        (errno.EIO, MeterReadError),
        (errno.ENODATA, MeterReadError),
    ],
)
def test_os_error_becomes_the_meter_error_its_errno_means(
    code: int, kind: type[MeterError]
) -> None:
    cause = OSError(code, "what the kernel said", "/sys/class/powercap/intel-rapl:0/energy_uj")

    error = os_meter_error("cpu0", "cannot read its RAPL counter", cause)

    assert type(error) is kind
    assert str(error) == (
        "cpu0: cannot read its RAPL counter: /sys/class/powercap/intel-rapl:0/energy_uj: "
        f"what the kernel said ({errno.errorcode[code]})"
    )


def test_os_error_without_errno_or_file_is_a_read_error_with_its_text() -> None:
    error = os_meter_error("dram0", "cannot read its counter", OSError("stale handle"))

    assert type(error) is MeterReadError
    assert str(error) == "dram0: cannot read its counter: stale handle"


def test_every_meter_error_is_exported_and_caught_as_meter_error() -> None:
    for kind in (MeterUnavailable, MeterPermissionError, MeterReadError):
        assert issubclass(kind, backends.MeterError)
        assert getattr(backends, kind.__name__) is kind
        assert kind.__name__ in backends.__all__
