"""``wattprint estimate``: the estimate forms on the command line, as a table (default) or JSON.

Without ``--location`` or ``--intensity``, env ``WATTPRINT_LOCATION`` prices it, as it does a run.
Bad input raises ``ValueError`` (or ``FileNotFoundError`` for ``--from-run``), which the CLI entry
point prints as one error line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence

from tracker.carbon.intensity import location_from_env, parse_intensity
from tracker.cli import Subparsers
from tracker.estimation.data import PRECISIONS
from tracker.estimation.forms import Estimate, Quantity, compare, estimate, from_run, reprice
from tracker.units import (
    J_PER_KWH,
    format_energy,
    format_hours,
    format_mass,
    format_number,
    format_power,
)

__all__ = ["handle", "register", "render"]

_EXAMPLES = """\
forms:
  1. hardware x time   wattprint estimate 300W:10:0.8 200W:2:0.6 --hours 48
                       wattprint estimate H100:8:0.9 'AMD EPYC 7763:2:0.5' --hours 72 --location DE
  2. device-hours      wattprint estimate --device-hours 1022362 --device A100-80GB \\
                           --pue 1.1 --intensity 385
  3. model and data    wattprint estimate --params 7B --tokens 2T --device H100 --count 64 \\
                           --precision bf16 --mfu 0.4 --location US-CA
  4. compare           wattprint estimate --params 7B --tokens 2T --device H100 --device A100 \\
                           --count 64 --location DE --location FR --location PL
                       wattprint estimate H100:8 --vs A100:16 --hours 100 --location SE
                       wattprint estimate --from-run wattprint-runs/proj/RUN --location FR
"""


def register(subparsers: Subparsers) -> None:
    """Add the ``estimate`` subcommand with its arguments; its handler is ``handle``."""
    p = subparsers.add_parser(
        "estimate",
        help="estimate energy and CO2e before a run, compare options, re-price a run",
        description="Estimate energy (kWh) and emissions (gCO2e) before a run.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hw = "MODEL:COUNT[:UTIL]"
    p.add_argument("devices", nargs="*", metavar=hw, help="hardware list, or WATTSW:COUNT[:UTIL]")
    p.add_argument("--hours", type=float, help="run time in h (with a hardware list)")
    p.add_argument("--vs", action="append", nargs="+", metavar=hw, help="another hardware list")
    p.add_argument("--device-hours", type=float, help="total accelerator-hours (h)")
    p.add_argument("--device", action="append", help="model or watts; repeat to compare")
    p.add_argument("--count", type=int, help="number of devices")
    p.add_argument("--params", type=_number, help="parameters N (7e9, 7B)")
    p.add_argument("--tokens", type=_number, help="training tokens D (2e12, 2T)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation, 0..1 (default 0.4)")
    p.add_argument(
        "--utilisation",
        "--utilization",
        type=float,
        default=1.0,
        help="average power as a share of rated power, 0..1 (default 1)",
    )
    p.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s per device")
    p.add_argument("--pue", type=float, help="power usage effectiveness (>= 1)")
    p.add_argument(
        "--location",
        action="append",
        help="country/state/cloud region; repeatable (default: env WATTPRINT_LOCATION)",
    )
    p.add_argument("--intensity", help="grid intensity: 500, 500g/kWh or 0.5kg/kWh")
    p.add_argument("--from-run", metavar="RUN_DIR", help="re-price a recorded run (run.json)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``wattprint estimate`` for parsed ``args``; print the result; return the exit status."""
    intensity = parse_intensity(args.intensity) if args.intensity is not None else None
    locations: list[str] = args.location or []
    if locations and intensity is not None:
        raise ValueError("give --location or --intensity, not both")
    if not locations and intensity is None and (place := location_from_env()) is not None:
        locations = [place.code]  # as a run is priced: env WATTPRINT_LOCATION
    if args.from_run is not None:
        rows = from_run(args.from_run, locations, intensity=intensity, pue=args.pue)
        print(_json(rows) if args.json else render(rows, title="Recorded run, re-priced"))
        return 0
    options = _options(args)
    if len(options) == 1 and len(locations) <= 1:
        one = reprice(
            options[0], pue=args.pue, location=locations[0] if locations else None,
            intensity=intensity,
        )  # fmt: skip
        print(_json([one]) if args.json else render([one]))
        return 0
    priced = [reprice(o, pue=args.pue, intensity=intensity) for o in options]
    rows = compare(priced, locations, pue=args.pue)
    print(_json(rows) if args.json else render(rows, title="Options compared, best first"))
    return 0


def render(rows: Sequence[Estimate], title: str | None = None) -> str:
    """One estimate with every step, or a ranked table of several."""
    if len(rows) == 1 and title is None:
        return _detail(rows[0])
    header = ("#", "option", "location", "g/kWh", "PUE", "time", "energy", "CO2e")
    table = [
        (
            str(rank),
            row.label,
            row.location or ("given" if row.intensity_g_per_kwh is not None else "-"),
            "-" if row.intensity_g_per_kwh is None else format_number(row.intensity_g_per_kwh),
            format_number(row.pue),
            "-" if row.duration_s is None else format_hours(row.duration_s, 4),
            format_energy(row.facility_energy_j, 4),
            "-" if row.co2_g is None else format_mass(row.co2_g, 4),
        )
        for rank, row in enumerate(rows, 1)
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = [title or "Estimates"] + [_row(r, widths) for r in [header, *table]]
    lines.append("energy is facility energy (IT x PUE); CO2e = energy x grid intensity")
    sources = {row.location: row.intensity_source for row in rows if row.location}
    lines += [f"  {code}: {source}" for code, source in sources.items()]
    return "\n".join(lines)


def _detail(row: Estimate) -> str:
    names = {"hardware": "hardware list x time", "device-hours": "device-hours x power"}
    lines = [f"Estimate ({names.get(row.form, row.form)}): {row.label}"]
    width = max(len(s.name) for s in row.steps)
    values = [_value(s) for s in row.steps]
    vwidth = max(len(v) for v in values)
    for step, value in zip(row.steps, values, strict=True):
        note = f"  {step.note}" if step.note else ""
        lines.append(f"  {step.name:<{width}}  {value:>{vwidth}}{note}")
    result = [f"energy {format_energy(row.facility_energy_j)}"]
    if row.power_w is not None:
        result.insert(0, f"power {format_power(row.power_w)}")
    if row.duration_s is not None:
        result.append(f"time {format_hours(row.duration_s)}")
    if row.co2_g is None:
        result.append("CO2e not computed: give --location or --intensity (or WATTPRINT_LOCATION)")
    else:
        result.append(f"emissions {format_mass(row.co2_g)} CO2e")
    lines.append("= " + ", ".join(result))
    return "\n".join(lines)


def _value(step: Quantity) -> str:
    value, unit = step.value, step.unit
    if unit == "W":
        return format_power(value)
    if unit == "kWh":
        return format_energy(value * J_PER_KWH)
    if unit == "h":
        return format_hours(value * 3600)
    if unit == "gCO2e":
        return f"{format_mass(value)} CO2e"
    if unit == "FLOP":
        mantissa, exponent = f"{value:.4e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)} FLOP"
    return f"{format_number(value)} {unit}".rstrip()


def _options(args: argparse.Namespace) -> list[Estimate]:
    """The unpriced options the arguments describe: one per hardware list or per device."""
    common = {"params": args.params, "tokens": args.tokens, "device_hours": args.device_hours}
    if args.devices or args.vs:
        if not args.devices:
            raise ValueError("--vs compares with a hardware list: give one before it")
        lists = [args.devices, *(args.vs or [])]
        return [estimate(devices, hours=args.hours, **common) for devices in lists]
    if args.device_hours is None and args.params is None and args.tokens is None:
        raise ValueError(
            "nothing to estimate: give MODEL:COUNT[:UTIL]... --hours H, or --device-hours H "
            "--device MODEL, or --params N --tokens D --device MODEL, or --from-run RUN_DIR"
        )
    model_args = {
        "count": args.count,
        "precision": args.precision,
        "mfu": args.mfu,
        "utilisation": args.utilisation,
        "peak_tflops": args.peak_tflops,
    }
    devices: list[str | None] = args.device or [None]
    return [estimate(device=d, **common, **model_args) for d in devices]


def _json(rows: Sequence[Estimate]) -> str:
    return json.dumps({"estimates": [row.to_dict() for row in rows]}, indent=2)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(
        c.ljust(w) if i == 1 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def _number(text: str) -> float:
    """A count such as ``7e9``, ``7B``, ``65.2b`` or ``1.4T`` (k, M, B/G, T suffixes)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMbBgGtT]?)\s*", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


_number.__name__ = "number"  # argparse names the type in its error: "invalid number value"
