"""carbontracker's constructor arguments turned into wattprint's: components, simulated meters.

Each function checks one argument (a ``ValueError`` names it) or returns the notes to warn about
where wattprint cannot honour it; ``tracker.compat.carbontracker`` explains the meanings.
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.base import COMPONENTS, Component, Meter
from backends.cpu.estimate import CpuEstimateMeter
from backends.discover import discover
from backends.estimate import checked_number, checked_share
from backends.gpu.estimate import GpuEstimateMeter
from tracker import arguments

DEFAULT_SIM_UTILISATION = 0.5  # carbontracker's default for sim_cpu_util and sim_gpu_util
_COMPONENTS: dict[str, tuple[Component, ...]] = {"gpu": ("gpu",), "cpu": ("cpu", "dram")}


def components_of(components: str) -> tuple[Component, ...]:
    """The wattprint components of carbontracker's comma-separated ``components`` string."""
    accepted = "'all', 'gpu', 'cpu' or 'gpu,cpu'"
    if not isinstance(components, str):
        raise ValueError(f"components must be one of {accepted}, got {components!r}")
    names = [c for c in components.replace(" ", "").lower().split(",") if c]
    if names == ["all"]:
        names = ["gpu", "cpu"]
    if not names or any(n not in _COMPONENTS for n in names):
        raise ValueError(f"components must be one of {accepted}, got {components!r}")
    chosen = {c for n in names for c in _COMPONENTS[n]}
    return tuple(c for c in COMPONENTS if c in chosen)


def simulated_meters(
    components: Sequence[Component],
    sim_cpu: str | None,
    sim_cpu_tdp: float | None,
    sim_cpu_util: float | None,
    sim_gpu: str | None,
    sim_gpu_watts: float | None,
    sim_gpu_util: float | None,
) -> tuple[list[Meter] | None, list[str]]:
    """The simulated meters plus those discovered for the rest; None when nothing is simulated."""
    simulated: list[Meter] = []
    notes: list[str] = []
    for kind, name, watts, util in (
        ("cpu", sim_cpu, sim_cpu_tdp, sim_cpu_util),
        ("gpu", sim_gpu, sim_gpu_watts, sim_gpu_util),
    ):
        watts_arg = "sim_cpu_tdp" if kind == "cpu" else "sim_gpu_watts"
        if name is None or watts is None:
            if (name, watts, util) != (None, None, None):
                notes.append(
                    f"sim_{kind} needs both sim_{kind} (a name) and {watts_arg} (W), as in "
                    f"carbontracker; the {kind.upper()} is measured instead"
                )
            continue
        if kind not in components:
            notes.append(f"sim_{kind} ignored: components leaves out {kind}")
            continue
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"sim_{kind} must be a non-empty {kind.upper()} name, got {name!r}")
        power_w = checked_number(watts_arg, watts, "W", zero_ok=True)
        utilisation = DEFAULT_SIM_UTILISATION
        if util is not None:
            utilisation = checked_share(f"sim_{kind}_util", util)
        detail = _sim_detail(kind, power_w, util)
        if kind == "gpu":
            simulated.append(GpuEstimateMeter(name, power_w, utilisation, detail=detail))
        else:
            simulated.append(CpuEstimateMeter(power_w, name, detail, utilisation))
    if not simulated:
        return None, notes
    rest = [c for c in components if not any(m.info.component == c for m in simulated)]
    found = discover(rest) if rest else None
    if found is not None:
        notes += [f"{m.device} not measured: {m.reason}. Fix: {m.fix}" for m in found.missing]
    return simulated + (found.meters if found is not None else []), notes


def _sim_detail(kind: str, watts: float, util: float | None) -> str:
    given = "given" if util is not None else "carbontracker's default"
    share = DEFAULT_SIM_UTILISATION if util is None else util
    what = "TDP" if kind == "cpu" else "power"
    return f"simulated: {what} {watts:g} W x utilisation {share:g} ({given})"


def api_key_notes(api_keys: dict[str, str] | None) -> list[str]:
    """Why carbontracker's ``api_keys`` go unused, once checked; nothing for None."""
    if api_keys is None:
        return []
    if not isinstance(api_keys, dict) or any(
        not isinstance(k, str) or k.lower() != "electricitymaps" for k in api_keys
    ):
        raise ValueError(
            f"api_keys must be a dict like {{'electricitymaps': KEY}}, got keys "
            f"{list(api_keys) if isinstance(api_keys, dict) else api_keys!r}"
        )
    return [
        "api_keys is not used: wattprint does no geo-IP lookup to pick an Electricity Maps "
        "zone; set ELECTRICITYMAPS_TOKEN and pass intensity=ElectricityMaps('<zone>'), or "
        "location='<country>' for its table value"
    ]


def run_id_with(prefix: str) -> str:
    """A new run id starting with carbontracker's ``log_file_prefix`` (checked as a name)."""
    if not isinstance(prefix, str):
        raise ValueError(f"log_file_prefix must be text without path separators, got {prefix!r}")
    if prefix:
        arguments.name("log_file_prefix", prefix)
    return arguments.new_run_id(prefix)
