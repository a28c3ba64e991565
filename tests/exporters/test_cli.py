"""``wattprint run --prometheus`` / ``--pushgateway``: an unmodified command's run, exported."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.shell import wattprint
from tests.exporters.test_prometheus import Gateway, parse
from tests.fake_powercap import build_powercap
from tracker import load_run
from tracker.cli.main import main

# The command: draws "power" by advancing the fake RAPL counters, then (with a URL) scrapes
# wattprint's /metrics until the live power gauge shows every zone, and saves what it read.
COMMAND = textwrap.dedent(
    """
    import os, sys, time, urllib.request
    out, url, counters = sys.argv[1], sys.argv[2], sys.argv[3:]
    for _ in range(10):
        for path in counters:
            value = int(open(path).read()) + 2_000_000  # 2 J a step
            with open(path + ".new", "w") as new:
                new.write(str(value))
            os.replace(path + ".new", path)
        time.sleep(0.1)
    body, deadline = "", time.monotonic() + 20
    while url != "-" and body.count("wattprint_power_watts{") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    open(out, "w").write(body)
    """
)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """A user's environment with a two-socket RAPL tree, and the tree's counter files."""
    root = tmp_path / "powercap"
    zones = build_powercap(root, sockets=2, core=False)
    env = os.environ | {"WATTPRINT_POWERCAP_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    yield env, sorted(str(z.energy_path) for z in zones.values() if z.name != "core")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_prometheus_serves_the_commands_live_power_while_it_runs(
    machine: tuple[dict[str, str], list[str]], tmp_path: Path
) -> None:
    env, counters = machine
    port, scraped = free_port(), tmp_path / "scraped.txt"
    url = f"http://127.0.0.1:{port}/metrics"
    result = wattprint(
        "run", "--quiet", "--prometheus", str(port), "--log-dir", str(tmp_path / "runs"),
        "--location", "SE", "--",
        sys.executable, "-c", COMMAND, str(scraped), url, *counters,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    power = parse(scraped.read_text())["wattprint_power_watts"]
    assert set(power) == {"cpu0", "cpu1", "dram0", "dram1"}
    assert all(watts >= 0 for watts in power.values())


def test_pushgateway_gets_the_commands_energy_when_it_ends(
    machine: tuple[dict[str, str], list[str]], tmp_path: Path
) -> None:
    env, counters = machine
    gateway = Gateway()
    try:
        logs = tmp_path / "runs"
        result = wattprint(
            "run", "--quiet", "--pushgateway", gateway.url, "--log-dir", str(logs),
            "--location", "SE", "--",
            sys.executable, "-c", COMMAND, str(tmp_path / "unused"), "-", *counters,
            env=env,
        )  # fmt: skip
    finally:
        gateway.close()
    assert result.returncode == 0, result.stderr
    (run_dir,) = (logs / "default").iterdir()
    devices = load_run(run_dir, devices=True)
    pushed = parse(gateway.pushes[-1][2])
    energy = pushed["wattprint_energy_joules_total"]
    assert energy == pytest.approx(dict(zip(devices["device"], devices["energy_j"], strict=True)))
    assert sum(energy.values()) == pytest.approx(20.0 * len(counters), rel=1e-6)
    assert pushed["wattprint_epochs_total"] == {"": 1.0}


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        *(
            ("--prometheus", v)
            for v in ("x", "9101:", "host:port", "-1", "70000", "\u0663\u0663", "0")
        ),
        *(("--pushgateway", v) for v in ("gw:port", "gw:99999", "http://:9091", "gw:9091 ")),
    ],
)
def test_a_bad_prometheus_flag_is_refused_before_the_run(
    flag: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", flag, value, "--location", "SE", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "port" in err and flag.removeprefix("--") in err.lower(), err
    assert not (tmp_path / "wattprint-runs").exists()


def test_a_missing_prometheus_client_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert main(["run", "--pushgateway", "gw:9091", "--location", "SE", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'wattprint[prometheus]'" in err and "Traceback" not in err
