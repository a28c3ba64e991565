"""The powercap RAPL reader against fake powercap trees (see tests/fake_powercap.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from backends.base import (
    Found,
    Meter,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
    Missing,
)
from backends.cpu.rapl import ROOT_ENV, find_rapl, permission_fix
from backends.discover import discover
from tests.fake_powercap import AMD_RANGE_UJ, INTEL_RANGE_UJ, build_powercap, honour_file_modes

UDEV_RULE_TEXT = (
    'ACTION!="remove", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", '
    'RUN+="/bin/chmod a+r /sys%p/energy_uj"'
)


T = TypeVar("T")


def without_hanging(function: Callable[[], T], fifo: Path, timeout_s: float = 5.0) -> T:
    """``function()`` on a thread: a failed test, not a hung suite, if it blocks on ``fifo``."""
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(function())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        with contextlib.suppress(OSError):  # a writer lets a blocked open return: thread ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"reading {fifo} blocked for {timeout_s} s")
    if errors:
        raise errors[0]
    return outcome[0]


def devices(found: Found) -> list[str]:
    return [meter.info.device for meter in found.meters]


def meter(found: Found, device: str) -> Meter:
    return next(m for m in found.meters if m.info.device == device)


def discover_in(root: Path, monkeypatch: pytest.MonkeyPatch) -> Found:
    """Discovery's CPU and DRAM meters for the powercap tree at ``root`` (env ``ROOT_ENV``)."""
    monkeypatch.setenv(ROOT_ENV, str(root))
    return discover(("cpu", "dram"))


def test_two_socket_tree_gives_package_and_dram_meters_by_socket(tmp_path: Path) -> None:
    build_powercap(tmp_path, sockets=2)

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0", "dram0", "cpu1", "dram1"]
    assert [m.info.component for m in found.meters] == ["cpu", "dram", "cpu", "dram"]
    assert found.missing == []
    for m in found.meters:
        assert (m.info.method, m.info.host_level, m.fast) == ("rapl", True, True)
    assert (
        meter(found, "dram1").info.detail
        == f"powercap {tmp_path}/intel-rapl:1/intel-rapl:1:1/energy_uj"
    )


def test_core_psys_and_mmio_zones_are_not_metered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zones = build_powercap(tmp_path, sockets=1, core=True, psys=True, mmio=True)
    zones["core0"].set_energy_uj(111)
    zones["psys"].set_energy_uj(222)
    zones["mmio0"].set_energy_uj(333)
    zones["cpu0"].set_energy_uj(444)
    zones["dram0"].set_energy_uj(555)
    caplog.set_level(logging.DEBUG, logger="backends.cpu.rapl")

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0", "dram0"]
    assert [m.read().energy_j for m in found.meters] == [444e-6, 555e-6]
    [skipped] = [r for r in caplog.records if "'psys') is not a package zone" in r.getMessage()]
    assert skipped.name == "backends.cpu.rapl"  # shown by DEBUG on that module's logger


def test_hexadecimal_zone_ids_are_found_and_ordered_by_socket(tmp_path: Path) -> None:
    # The kernel names zones "%s:%x": the 11th is intel-rapl:a, the 17th intel-rapl:10.
    build_powercap(tmp_path, sockets=17, dram=False)
    assert (tmp_path / "intel-rapl:a").is_dir() and (tmp_path / "intel-rapl:10").is_dir()

    found = find_rapl(tmp_path)

    assert devices(found) == [f"cpu{n}" for n in range(17)]


def test_reading_is_the_energy_uj_file_in_joules_at_monotonic_time(tmp_path: Path) -> None:
    zones = build_powercap(tmp_path, sockets=2)
    zones["cpu1"].set_energy_uj(123_456_789_012)
    zones["dram1"].set_energy_uj(7)
    found = find_rapl(tmp_path)

    before_s = time.monotonic()
    cpu1 = meter(found, "cpu1").read()
    dram1 = meter(found, "dram1").read()
    after_s = time.monotonic()

    assert cpu1.energy_j == 123_456.789012 and cpu1.power_w is None
    assert dram1.energy_j == 7e-6
    assert before_s <= cpu1.t_s <= dram1.t_s <= after_s
    zones["cpu1"].add_energy_j(2.5)
    assert meter(found, "cpu1").read().energy_j == pytest.approx(123_459.289012, abs=1e-9)


def test_wrap_j_is_max_energy_range_uj_in_joules(tmp_path: Path) -> None:
    build_powercap(tmp_path, sockets=1, max_energy_range_uj=65_712_999_613)

    found = find_rapl(tmp_path)

    assert [m.wrap_j for m in found.meters] == [65_712.999613, 65_712.999613]


def test_max_power_w_is_the_largest_constraint_max_power_of_the_zone(tmp_path: Path) -> None:
    # It bounds how fast a counter can wrap: wrap_j / max_power_w seconds at the least.
    zones = build_powercap(tmp_path, sockets=2)
    zones["cpu0"].add_constraints(125_000_000, 250_500_000, 0)  # long term, short term, peak
    zones["dram0"].add_constraints(36_000_000)
    zones["cpu1"].add_constraints(0, "n/a")  # nothing the hardware states: None, not 0
    # dram1 has no constraint files at all

    found = find_rapl(tmp_path)

    assert {m.info.device: m.max_power_w for m in found.meters} == {
        "cpu0": 250.5,
        "dram0": 36.0,
        "cpu1": None,
        "dram1": None,
    }


def test_wrapped_counter_reads_lower_and_modulo_wrap_gives_the_true_delta(tmp_path: Path) -> None:
    zones = build_powercap(tmp_path, sockets=1)
    zones["cpu0"].set_energy_uj(INTEL_RANGE_UJ - 2_000_000)  # 2 J before the wrap
    cpu0 = meter(find_rapl(tmp_path), "cpu0")
    assert cpu0.wrap_j == INTEL_RANGE_UJ / 1e6
    previous_j = cpu0.read().energy_j

    zones["cpu0"].add_energy_j(5.0)
    current_j = cpu0.read().energy_j

    assert previous_j is not None and current_j is not None
    assert current_j < previous_j
    assert current_j == pytest.approx(2.999999, abs=1e-9)  # the hardware shows range, then 0
    assert (current_j - previous_j) % cpu0.wrap_j == pytest.approx(5.0, abs=2e-6)


@pytest.mark.parametrize(
    ("unreadable", "readable", "counter"),
    [
        ("cpu0", "dram0", "intel-rapl:0/energy_uj"),
        ("dram0", "cpu0", "intel-rapl:0/intel-rapl:0:1/energy_uj"),
    ],
)
def test_unreadable_energy_uj_gives_missing_with_chmod_and_udev_fix_and_no_meter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unreadable: str, readable: str, counter: str
) -> None:
    # Mode 000 is refused by the kernel for an ordinary user; as root, honour_file_modes makes the
    # reader refuse it too, so either way find_rapl meets a real PermissionError.
    zones = build_powercap(tmp_path, sockets=1)
    zones[unreadable].make_unreadable()
    honour_file_modes(monkeypatch)

    found = find_rapl(tmp_path)

    assert devices(found) == [readable]
    [missing] = found.missing
    assert (missing.component, missing.device) == (unreadable[:-1], unreadable)
    assert (
        missing.reason
        == f"{tmp_path}/{counter} is readable by root only (Linux 5.10+, CVE-2020-8694)"
    )
    assert missing.fix.startswith(
        f"sudo chmod a+r {tmp_path}/intel-rapl:*/energy_uj "
        f"{tmp_path}/intel-rapl:*/intel-rapl:*/energy_uj (until reboot); "
        f"to keep it: echo '{UDEV_RULE_TEXT}' | sudo tee /etc/udev/rules.d/99-wattprint-rapl.rules "
        "&& sudo udevadm trigger --subsystem-match=powercap (an admin's one-line rule)."
    )
    assert missing.fix.endswith("sacct -j $SLURM_JOB_ID --format=JobID,ConsumedEnergy")


def test_second_package_with_unreadable_counter_is_missing_beside_the_metered_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones = build_powercap(tmp_path, sockets=2)
    zones["cpu1"].make_unreadable()
    honour_file_modes(monkeypatch)

    for found in (find_rapl(tmp_path), discover_in(tmp_path, monkeypatch)):
        assert devices(found) == ["cpu0", "dram0", "dram1"]
        [missing] = found.missing
        assert (missing.component, missing.device) == ("cpu", "cpu1")
        assert missing.reason == (
            f"{tmp_path}/intel-rapl:1/energy_uj is readable by root only (Linux 5.10+, "
            "CVE-2020-8694)"
        )
        assert missing.fix == permission_fix(tmp_path)


@pytest.mark.parametrize("class_links", [True, False], ids=["class layout", "devices layout"])
def test_second_package_with_unreadable_directory_is_missing_cpu_and_dram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, class_links: bool
) -> None:
    # Mode 000 on intel-rapl:1 hides its name, counter and sub-zones from an ordinary user; as
    # root, honour_file_modes makes the reader meet the same PermissionError.
    zones = build_powercap(tmp_path, sockets=2, class_links=class_links)
    zones["cpu1"].make_directory_unreadable()
    honour_file_modes(monkeypatch)
    zones_dir = tmp_path if class_links else tmp_path / "intel-rapl"

    for found in (find_rapl(tmp_path), discover_in(tmp_path, monkeypatch)):
        assert devices(found) == ["cpu0", "dram0"]
        assert [(m.component, m.device) for m in found.missing] == [
            ("cpu", "cpu1"),
            ("dram", "dram1"),
        ]
        for missing in found.missing:
            assert (
                missing.reason == f"{zones_dir}/intel-rapl:1/name cannot be read: permission denied"
            )
            assert missing.fix.startswith(f"sudo chmod a+rx {zones_dir}/intel-rapl:1 && ")
            assert missing.fix.endswith(permission_fix(zones_dir))


def test_vanished_package_directory_is_missing_cpu_and_dram(tmp_path: Path) -> None:
    # The class directory still lists intel-rapl:1, but its link leads nowhere (driver unloading).
    zones = build_powercap(tmp_path, sockets=2)
    shutil.rmtree(zones["cpu1"].path)

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0", "dram0"]
    assert [(m.device, m.fix) for m in found.missing] == [("cpu1", ""), ("dram1", "")]
    for missing in found.missing:
        assert missing.reason.startswith(f"cannot read RAPL zone {tmp_path}/intel-rapl:1: ")
        assert "No such file or directory" in missing.reason


@pytest.mark.parametrize("hidden", ["sub-zone list", "DRAM zone"])
def test_dram_zone_that_cannot_be_looked_for_is_missing_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hidden: str
) -> None:
    # Not "no DRAM zone on this CPU": whether there is one could not be seen.
    zones = build_powercap(tmp_path, sockets=1)
    if hidden == "sub-zone list":
        zones["cpu0"].path.chmod(0o111)  # its files can be read, its entries not listed
        denied = tmp_path / "intel-rapl:0"
    else:
        zones["dram0"].make_directory_unreadable()
        denied = tmp_path / "intel-rapl:0" / "intel-rapl:0:1" / "name"
    honour_file_modes(monkeypatch)

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0"]
    [missing] = found.missing
    assert (missing.component, missing.device) == ("dram", "dram0")
    assert missing.reason == f"{denied} cannot be read: permission denied"
    assert missing.fix.endswith(permission_fix(tmp_path))


@pytest.mark.parametrize("layout", ["absent", "empty", "other control type only"])
def test_no_powercap_tree_gives_missing_cpu_and_dram_with_driver_hint(
    tmp_path: Path, layout: str
) -> None:
    root = tmp_path / "powercap"
    if layout != "absent":
        root.mkdir()
    if layout == "other control type only":
        (root / "intel-rapl-mmio:0").mkdir()

    found = find_rapl(root)

    assert found.meters == []
    assert [(m.component, m.device) for m in found.missing] == [("cpu", "cpu"), ("dram", "dram")]
    for missing in found.missing:
        assert missing.reason == f"no RAPL powercap interface at {root}"
        assert "modprobe intel_rapl_msr" in missing.fix
        assert "WATTPRINT_POWERCAP_ROOT" in missing.fix


def test_package_without_dram_zone_gives_missing_dram(tmp_path: Path) -> None:
    build_powercap(tmp_path, sockets=2, dram=False)

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0", "cpu1"]
    assert found.missing == [
        Missing("dram", "dram0", "no DRAM RAPL zone on this CPU", ""),
        Missing("dram", "dram1", "no DRAM RAPL zone on this CPU", ""),
    ]


@pytest.mark.parametrize("device", ["cpu0", "dram0"])
def test_vanished_zone_raises_meter_unavailable_naming_device_and_file(
    tmp_path: Path, device: str
) -> None:
    zones = build_powercap(tmp_path, sockets=1)
    m = meter(find_rapl(tmp_path), device)
    m.read()

    zones[device].remove()

    with pytest.raises(MeterUnavailable) as raised:
        m.read()
    message = str(raised.value)
    assert message.startswith(f"{device}: cannot read its RAPL counter: {tmp_path}/intel-rapl:0/")
    assert message.endswith("/energy_uj: No such file or directory (ENOENT)")
    assert isinstance(raised.value.__cause__, FileNotFoundError)


def test_counter_made_root_only_mid_run_raises_meter_permission_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones = build_powercap(tmp_path, sockets=1)
    cpu0 = meter(find_rapl(tmp_path), "cpu0")

    zones["cpu0"].make_unreadable()
    honour_file_modes(monkeypatch)

    with pytest.raises(MeterPermissionError, match=r"^cpu0: .*energy_uj: Permission denied"):
        cpu0.read()


def test_fifo_in_place_of_a_counter_is_missing_at_discovery_and_nothing_blocks(
    tmp_path: Path,
) -> None:
    zones = build_powercap(tmp_path, sockets=2)
    zones["cpu1"].replace_energy_with_fifo()

    found = without_hanging(lambda: find_rapl(tmp_path), zones["cpu1"].energy_path)

    assert devices(found) == ["cpu0", "dram0", "dram1"]
    [missing] = found.missing
    assert (missing.component, missing.device) == ("cpu", "cpu1")
    assert "intel-rapl:1/energy_uj" in missing.reason
    assert "a FIFO, not a regular file like a sysfs attribute" in missing.reason


def test_counter_that_becomes_a_fifo_raises_meter_read_error_without_blocking(
    tmp_path: Path,
) -> None:
    zones = build_powercap(tmp_path, sockets=1)
    cpu0 = meter(find_rapl(tmp_path), "cpu0")
    zones["cpu0"].replace_energy_with_fifo()

    with pytest.raises(MeterReadError, match=r"^cpu0: .*energy_uj: a FIFO, not a regular file"):
        without_hanging(cpu0.read, zones["cpu0"].energy_path)


@pytest.mark.parametrize("text", ["", "\n", "abc\n", "-5\n", "12.5\n", "1e6\n", "\u0663\n"])
def test_garbage_in_counter_raises_meter_read_error(tmp_path: Path, text: str) -> None:
    zones = build_powercap(tmp_path, sockets=1)
    cpu0 = meter(find_rapl(tmp_path), "cpu0")

    zones["cpu0"].write_energy_text(text)

    with pytest.raises(MeterReadError, match="not a non-negative integer") as raised:
        cpu0.read()
    assert str(raised.value).startswith(f"cpu0: bad RAPL counter: {tmp_path}/intel-rapl:0/")


def test_garbage_at_discovery_gives_missing_not_an_exception(tmp_path: Path) -> None:
    zones = build_powercap(tmp_path, sockets=1)
    zones["dram0"].write_energy_text("garbage\n")

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0"]
    [missing] = found.missing
    assert (missing.device, missing.fix) == ("dram0", "")
    assert "not a non-negative integer" in missing.reason


def test_env_root_is_read_when_no_root_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_powercap(tmp_path / "host", sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "host"))

    found = find_rapl()

    assert devices(found) == ["cpu0", "dram0"]
    assert str(tmp_path / "host") in found.meters[0].info.detail


def test_explicit_root_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_powercap(tmp_path / "two", sockets=2)
    build_powercap(tmp_path / "one", sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "one"))

    assert devices(find_rapl(tmp_path / "two")) == ["cpu0", "dram0", "cpu1", "dram1"]


def test_amd_package_zone_is_metered_and_dram_reported_missing(tmp_path: Path) -> None:
    # AMD Zen: package-N with a core sub-zone in the intel-rapl control type, and no DRAM zone.
    zones = build_powercap(tmp_path, sockets=2, vendor="amd")
    zones["cpu1"].set_energy_uj(42_000_000)

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0", "cpu1"]
    assert [m.wrap_j for m in found.meters] == [AMD_RANGE_UJ / 1e6] * 2
    assert meter(found, "cpu1").read().energy_j == 42.0
    assert [(m.device, m.reason) for m in found.missing] == [
        ("dram0", "no DRAM RAPL zone on this CPU"),
        ("dram1", "no DRAM RAPL zone on this CPU"),
    ]


def test_multi_die_packages_get_one_meter_per_die(tmp_path: Path) -> None:
    # The kernel names such zones package-P-die-D; the zone number is the logical die.
    zones = build_powercap(tmp_path, sockets=2, dies=2)
    zones["cpu1-die0"].set_energy_uj(5_000_000)

    found = find_rapl(tmp_path)

    assert devices(found) == [
        "cpu0-die0", "dram0-die0", "cpu0-die1", "dram0-die1",
        "cpu1-die0", "dram1-die0", "cpu1-die1", "dram1-die1",
    ]  # fmt: skip
    assert meter(found, "cpu1-die0").read().energy_j == 5.0
    assert meter(found, "cpu1-die0").info.model.startswith("package-1-die-0")


def test_bind_mounted_devices_layout_is_found(tmp_path: Path) -> None:
    # A copy of /sys/devices/virtual/powercap: zones only under intel-rapl/, no top-level links.
    zones = build_powercap(tmp_path, sockets=2, class_links=False)
    zones["dram1"].set_energy_uj(9_000_000)
    assert not (tmp_path / "intel-rapl:0").exists()

    found = find_rapl(tmp_path)

    assert devices(found) == ["cpu0", "dram0", "cpu1", "dram1"]
    assert meter(found, "dram1").read().energy_j == 9.0


def test_model_is_the_zone_name_and_the_cpu_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon Test 9999\n")
    monkeypatch.setattr("backends.cpu.cpuinfo.CPUINFO_PATH", cpuinfo)
    build_powercap(tmp_path / "powercap", sockets=1)

    found = find_rapl(tmp_path / "powercap")

    assert [m.info.model for m in found.meters] == [
        "package-0 (Xeon Test 9999)",
        "dram (Xeon Test 9999)",
    ]
    monkeypatch.setattr("backends.cpu.cpuinfo.CPUINFO_PATH", tmp_path / "absent")
    assert [m.info.model for m in find_rapl(tmp_path / "powercap").meters] == ["package-0", "dram"]


def test_importing_the_readers_reads_no_files() -> None:
    code = (
        "import builtins, io, os\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError(f'file access at import: {args}')\n"
        "builtins.open = io.open = os.open = os.scandir = refuse\n"
        "import backends.cpu.rapl, backends.cpu.pyrapl\n"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_an_unreadable_counter_under_slurm_names_the_jobs_own_sacct_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    build_powercap(tmp_path, sockets=1, dram=False)["cpu0"].make_unreadable()
    honour_file_modes(monkeypatch)
    missing = next(m for m in find_rapl(tmp_path).missing if m.device == "cpu0")
    assert "a node meter readable by users" in missing.fix
    assert missing.fix.endswith("sacct -j 4242 --format=JobID,ConsumedEnergy")
