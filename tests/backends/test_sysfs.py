"""One sysfs root for every reader: ``WATTPRINT_SYSFS_ROOT`` moves them all, powercap's own wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends import sysfs
from backends.cpu.rapl import find_rapl
from tests.fake_powercap import build_powercap


def test_powercap_is_found_under_the_sysfs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATTPRINT_POWERCAP_ROOT", raising=False)
    monkeypatch.setenv(sysfs.ROOT_ENV, str(tmp_path))
    build_powercap(tmp_path / "class" / "powercap", sockets=2)

    found = find_rapl()

    assert [m.info.device for m in found.meters] == ["cpu0", "dram0", "cpu1", "dram1"]


def test_the_powercap_root_wins_over_the_sysfs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_powercap(tmp_path / "sys" / "class" / "powercap", sockets=2)
    build_powercap(tmp_path / "powercap", sockets=1)
    monkeypatch.setenv(sysfs.ROOT_ENV, str(tmp_path / "sys"))
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))

    assert [m.info.device for m in find_rapl().meters] == ["cpu0", "dram0"]


def test_a_fifo_in_an_attribute_s_place_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "energy1_input"
    os.mkfifo(fifo)

    with pytest.raises(OSError, match="FIFO"):
        sysfs.read_attribute(fifo)
