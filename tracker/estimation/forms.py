"""Estimate the energy and emissions of training before it runs, or re-price a recorded run.

Four forms, one result (``Estimate``, every intermediate quantity kept in ``steps``):

1. Hardware list x time: E = P x T with P = sum of P_i x U_i (``estimate_hardware``).
2. Device-hours x average power per device, as published training reports give it
   (``estimate_device_hours``).
3. From model and data: ~6·N·D FLOPs for a dense transformer, over the accelerator's peak dense
   throughput x MFU, gives device-hours and wall time (``estimate_training``).
4. Options side by side, ranked (``compare``), and a recorded run re-priced (``from_run``).

Pricing (PUE, location, intensity) is in ``tracker.estimation.result``; device ratings and
throughput in ``tracker.estimation.data``; readable units in ``tracker.units``; the command line in
``tracker.cli.estimate``. ``estimate`` is also ``tracker.estimate``; this module is not named so,
or it would shadow that function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tracker.carbon.pricing import validate_pue
from tracker.estimation.data import (
    DeviceLoad,
    check_fraction,
    parse_count,
    parse_device,
    peak_throughput,
    rating,
)
from tracker.estimation.result import Estimate, Quantity, non_negative, positive, priced
from tracker.output.logs import read_run_json

__all__ = [
    "DEFAULT_MFU",
    "DeviceLoad",
    "Estimate",
    "Quantity",
    "compare",
    "estimate",
    "estimate_device_hours",
    "estimate_hardware",
    "estimate_training",
    "from_run",
    "reprice",
]


DEFAULT_MFU = 0.4
"""Model FLOPs utilisation assumed when none is given. Large dense-transformer training reaches
0.3-0.5: PaLM 540B reported 0.462 (Chowdhery et al., 2022, "PaLM: Scaling Language Modeling with
Pathways", Table 3)."""


def estimate(
    devices: Sequence[str | DeviceLoad] | None = None,
    *,
    hours: float | None = None,
    device_hours: float | None = None,
    params: float | None = None,
    tokens: float | None = None,
    device: str | float | None = None,
    count: int | None = None,
    precision: str = "bf16",
    mfu: float | None = None,
    utilisation: float = 1.0,
    peak_tflops: float | None = None,
    pue: float | None = None,
    location: str | None = None,
    intensity: float | None = None,
) -> Estimate:
    """One estimate; the arguments given choose the form.

    ``devices`` + ``hours`` -> hardware list x time; ``device_hours`` + ``device`` -> device-hours;
    ``params`` + ``tokens`` + ``device`` -> from model and data. See the form functions for the
    rest. ``intensity`` is in g/kWh; ``location`` is resolved by
    ``tracker.carbon.locations.resolve``.
    """
    pricing: dict[str, Any] = {"pue": pue, "location": location, "intensity": intensity}
    chosen = [
        name
        for name, given in (
            ("devices", devices is not None),
            ("device_hours", device_hours is not None),
            ("params/tokens", params is not None or tokens is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        raise ValueError(
            "give exactly one of: devices (with hours), device_hours (with device), or "
            f"params and tokens (with device); got {', '.join(chosen) or 'none'}"
        )
    if devices is not None:
        if hours is None:
            raise ValueError("hours is required with devices (E = P x T)")
        return estimate_hardware(devices, hours, **pricing)
    if device is None:
        raise ValueError("device is required: a model name (H100, A100-80GB) or watts (400W)")
    if device_hours is not None:
        return estimate_device_hours(
            device_hours, device, utilisation=utilisation, count=count, **pricing
        )
    if params is None or tokens is None:
        raise ValueError("params and tokens are both required for an estimate from the model")
    return estimate_training(
        params,
        tokens,
        device,
        count=1 if count is None else count,
        precision=precision,
        mfu=mfu,
        utilisation=utilisation,
        peak_tflops=peak_tflops,
        **pricing,
    )


def estimate_hardware(
    devices: Sequence[str | DeviceLoad],
    hours: float,
    *,
    pue: float | None = None,
    location: str | None = None,
    intensity: float | None = None,
) -> Estimate:
    """E = P x T for a hardware list: ``"MODEL:COUNT[:UTIL]"`` / ``"WATTSW:COUNT[:UTIL]"`` items.

    P = sum of count x rated power x utilisation; rated power is the table TDP or maximum board
    power of the model, or the watts given.
    """
    loads = tuple(parse_device(d) if isinstance(d, str) else d for d in devices)
    if not loads:
        raise ValueError("devices is empty: give at least one MODEL:COUNT[:UTIL]")
    duration_s = non_negative("hours", hours) * 3600
    power_w = sum(load.power_w for load in loads)
    steps = [
        Quantity(
            f"{load.count} x {load.rating.name}",
            load.power_w,
            "W",
            f"{load.count} x {load.rating.rated_w:g} W x utilisation {load.utilisation:g}",
        )
        for load in loads
    ]
    steps += [
        Quantity("IT power P = sum(P_i x U_i)", power_w, "W"),
        Quantity("time T", duration_s / 3600, "h"),
    ]
    label = ", ".join(
        f"{load.count} x {load.rating.key or load.rating.name}"
        + ("" if load.utilisation == 1 else f" @{load.utilisation:g}")
        for load in loads
    )
    return priced(
        Estimate(
            "hardware", label, power_w * duration_s, 1.0, "", power_w=power_w,
            duration_s=duration_s, devices=loads, steps=tuple(steps),
        ),
        pue, location, intensity,
    )  # fmt: skip


def estimate_device_hours(
    device_hours: float,
    device: str | float,
    *,
    utilisation: float = 1.0,
    count: int | None = None,
    pue: float | None = None,
    location: str | None = None,
    intensity: float | None = None,
) -> Estimate:
    """E = device-hours x average power per device (rated power x ``utilisation``).

    ``utilisation`` is the average draw as a share of rated power; 1.0 (the default) is the
    rated-power figure training reports use. With ``count``, wall time = device-hours / count.
    """
    hours = non_negative("device_hours", device_hours)
    load = DeviceLoad(rating(device), 1, check_fraction("utilisation", utilisation))
    steps = [
        Quantity("device-hours", hours, "device-h"),
        Quantity("rated power per device", load.rating.rated_w, "W", load.rating.source),
        Quantity("average power per device", load.power_w, "W", f"x utilisation {utilisation:g}"),
    ]
    power_w = duration_s = None
    if count is not None:
        n = parse_count(count)
        duration_s = hours / n * 3600
        power_w = n * load.power_w
        steps += [
            Quantity("devices", n, ""),
            Quantity("wall time", duration_s / 3600, "h", "device-hours / devices"),
        ]
    label = f"{_hours_text(hours)} device-h x {load.rating.key or load.rating.name}"
    return priced(
        Estimate(
            "device-hours", label, hours * 3600 * load.power_w, 1.0, "", power_w=power_w,
            duration_s=duration_s, device_hours=hours, devices=(load,), steps=tuple(steps),
        ),
        pue, location, intensity,
    )  # fmt: skip


def estimate_training(
    params: float,
    tokens: float,
    device: str | float,
    *,
    count: int = 1,
    precision: str = "bf16",
    mfu: float | None = None,
    utilisation: float = 1.0,
    peak_tflops: float | None = None,
    pue: float | None = None,
    location: str | None = None,
    intensity: float | None = None,
) -> Estimate:
    """Energy of training a dense transformer of ``params`` parameters on ``tokens`` tokens.

    FLOPs ~ 6·N·D (forward and backward pass; Kaplan et al., 2020, "Scaling Laws for Neural
    Language Models"). Device-seconds = FLOPs / (peak dense throughput x MFU); the peak comes from
    the bundled table for ``device`` and ``precision`` unless ``peak_tflops`` is given. Energy =
    device-hours x rated power x ``utilisation``; wall time = device-hours / ``count``.
    """
    n_params = positive("params", params)
    n_tokens = positive("tokens", tokens)
    n = parse_count(count)
    share = DEFAULT_MFU if mfu is None else mfu
    if not 0.0 < share <= 1.0:
        raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
    load = DeviceLoad(rating(device), 1, check_fraction("utilisation", utilisation))
    if peak_tflops is not None:
        peak, peak_note = positive("peak_tflops", peak_tflops), "given"
    else:
        row = peak_throughput(load.rating.key, precision)
        peak, peak_note = row.dense_tflops, f"{precision} dense, {row.source}"
    flops = 6.0 * n_params * n_tokens
    device_s = flops / (peak * 1e12 * share)
    duration_s = device_s / n
    mfu_note = "assumed default" if mfu is None else "given"
    steps = (
        Quantity("parameters N", n_params, ""),
        Quantity("training tokens D", n_tokens, ""),
        Quantity("training compute C = 6·N·D", flops, "FLOP"),
        Quantity("peak dense throughput per device", peak, "TFLOP/s", peak_note),
        Quantity("MFU", share, "", mfu_note),
        Quantity("achieved throughput per device", peak * share, "TFLOP/s", "peak x MFU"),
        Quantity("device-hours C / (peak x MFU)", device_s / 3600, "device-h"),
        Quantity("devices", n, ""),
        Quantity("wall time", duration_s / 3600, "h", "device-hours / devices"),
        Quantity("rated power per device", load.rating.rated_w, "W", load.rating.source),
        Quantity("average power per device", load.power_w, "W", f"x utilisation {utilisation:g}"),
        Quantity("IT power", n * load.power_w, "W", "devices x average power"),
    )
    label = f"{n} x {load.rating.key or load.rating.name} {precision} MFU {share:g}"
    return priced(
        Estimate(
            "model", label, device_s * load.power_w, 1.0, "", power_w=n * load.power_w,
            duration_s=duration_s, device_hours=device_s / 3600,
            devices=(replace(load, count=n),), steps=steps,
        ),
        pue, location, intensity,
    )  # fmt: skip


def reprice(
    option: Estimate,
    *,
    pue: float | None = None,
    location: str | None = None,
    intensity: float | None = None,
) -> Estimate:
    """``option`` priced for another location or intensity (and PUE); energy is unchanged."""
    return priced(option, pue, location, intensity)


def compare(
    options: Sequence[Estimate], locations: Sequence[str] = (), *, pue: float | None = None
) -> list[Estimate]:
    """Every option in every location (or as priced, without locations), ranked.

    Ranked by gCO2e where every row has an intensity, else by facility energy; ties by time.
    """
    rows = [reprice(o, pue=pue, location=loc) for o in options for loc in locations] or list(
        options
    )
    if all(r.co2_g is not None for r in rows):
        return sorted(rows, key=lambda r: (r.co2_g or 0.0, r.facility_energy_j, _time(r)))
    return sorted(rows, key=lambda r: (r.facility_energy_j, _time(r)))


def from_run(
    run_dir: str | Path,
    locations: Sequence[str] = (),
    *,
    intensity: float | None = None,
    pue: float | None = None,
) -> list[Estimate]:
    """A recorded run's measured energy, and its predicted full-run energy, re-priced.

    Reads ``run.json`` only. Each row is priced in every location given (or at ``intensity``),
    with the run's own PUE unless ``pue`` is given. Raises ``FileNotFoundError`` without run.json.
    """
    path = Path(run_dir) / "run.json"
    if not locations and intensity is None:
        raise ValueError("give at least one location (or an intensity) to re-price the run in")
    try:
        doc = read_run_json(path)
        totals = doc["totals"]
        if totals["it_energy_j"] is None:
            raise ValueError(f"{path}: the run measured no energy, so there is nothing to re-price")
        energy_j, duration_s = float(totals["it_energy_j"]), float(totals["duration_s"])
        run_pue = float(doc.get("pue") or 1.0)
        prediction = doc.get("prediction")
        predicted_j = float(prediction["it_energy_j"]) if prediction else None
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a wattprint run.json ({error!r})") from error
    run = Estimate(
        "run", "measured", energy_j, validate_pue(run_pue), "the run's", duration_s=duration_s
    )
    rows = [run]
    if predicted_j is not None:
        rows.append(replace(run, label="predicted full run", energy_j=predicted_j, duration_s=None))
    prices: list[tuple[str | None, float | None]] = [(loc, None) for loc in locations]
    prices = prices or [(None, intensity)]
    return [priced(row, pue, loc, g_per_kwh) for row in rows for loc, g_per_kwh in prices]


# --- helpers ----------------------------------------------------------------------------------


def _hours_text(hours: float) -> str:
    return f"{hours:,.0f}" if hours == round(hours) else f"{hours:g}"


def _time(option: Estimate) -> float:
    return option.duration_s if option.duration_s is not None else math.inf
