"""Bundled hardware specifications: CPU TDP and accelerator maximum power, looked up by model name.

Estimates need a power rating where no meter exists: TDP for a CPU package, maximum board power for
an accelerator. Both tables ship in ``backends/data`` (provenance in ``SOURCES.md`` there) and are
read on first use, never at import. Names are matched the way the system reports them
(``/proc/cpuinfo``, psutil, NVML), after normalisation; a name that does not resolve gives None, and
``close_matches`` offers what the user may have meant.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

__all__ = ["GpuSpec", "close_matches", "cpu_tdp_w", "gpu_power_w", "gpu_specs"]


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator variant from the bundled table.

    ``key`` is the normalised model+variant (``h100-sxm5``, ``a100-pcie-80gb``), itself a valid
    lookup name. ``max_power_w`` is the vendor's maximum board power or TDP (``power_metric`` says
    which); ``power_range_w`` notes configurable limits; ``source`` is the vendor document.
    """

    key: str
    vendor: str
    model: str
    variant: str
    form_factor: str
    forms: tuple[str, ...]
    memory_gb: tuple[int, ...]
    max_power_w: float
    power_range_w: str
    power_metric: str
    launch_year: int
    source: str
    source_kind: str


def cpu_tdp_w(model_name: str) -> tuple[float, str] | None:
    """TDP in watts of one CPU package, and the table name it matched, or None if unknown.

    Accepts names as the OS gives them (``"Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"``,
    ``"AMD EPYC 7763 64-Core Processor"``): trademarks, clock speeds, core counts and "CPU" /
    "Processor" are ignored. Only a whole model number matches: ``6248R`` never falls back to
    ``6248``, and a generic name (``"Intel Xeon Processor (Skylake)"``) resolves to nothing.
    """
    tokens = _cpu_tokens(model_name)
    if not tokens:
        return None
    index = _cpu_index()
    exact = index.get(tokens)
    if exact is not None:
        return exact
    # The table name may sit inside a longer reported name ("11th Gen ...", "... with Radeon").
    best: tuple[float, str] | None = None
    best_len = 0
    for start in range(len(tokens)):
        for end in range(len(tokens), start, -1):
            if end - start <= best_len:
                break
            if end < len(tokens) and tokens[end] not in _CPU_TRAILING_NOISE:
                continue
            hit = index.get(tokens[start:end])
            if hit is not None and any(ch.isdigit() for ch in "".join(tokens[start:end])):
                best, best_len = hit, end - start
    return best


def gpu_power_w(model: str) -> tuple[float, GpuSpec] | None:
    """Maximum board power in watts of an accelerator, and its table row, or None if unknown.

    Accepts NVML names (``"NVIDIA H100 80GB HBM3"``, ``"Tesla V100-SXM2-16GB"``), table keys
    (``"a100-pcie-80gb"``) and short names (``"H100"``, ``"TPU v3"``, ``"MI300X"``). A form factor
    (SXM, PCIe, NVL) or memory size in the name selects the variant; a bare model name resolves to
    the first variant listed (the SXM part where there is one). Any other word in the name that the
    table cannot explain (``"RTX 3090 Ti"``, ``"V100-SXM3-32GB-H"``) makes the lookup fail rather
    than silently return a sibling part's rating.
    """
    tokens = _gpu_tokens(model)
    found: tuple[int, GpuSpec] | None = None
    for spec in gpu_specs():
        score = _gpu_match(spec, tokens)
        if score > 0 and (found is None or score > found[0]):
            found = (score, spec)
    if found is None:
        return None
    return found[1].max_power_w, found[1]


def gpu_specs() -> tuple[GpuSpec, ...]:
    """Every accelerator variant in the bundled table, in table order."""
    return _gpu_table()


def close_matches(kind: Literal["gpu", "cpu"], name: str, n: int = 5) -> list[str]:
    """Up to ``n`` table names close to ``name``, best first, to suggest after a failed lookup.

    For ``"gpu"`` the suggestions are table keys (each a valid lookup name); for ``"cpu"`` they are
    the CPU table's model names.
    """
    if kind == "gpu":
        tokens = _gpu_tokens(name)
        same_model = [s.key for s in gpu_specs() if _model_span(s, tokens) is not None]
        fuzzy = difflib.get_close_matches(
            "-".join(tokens), [s.key for s in gpu_specs()], n=n, cutoff=0.5
        )
        return list(dict.fromkeys(same_model + fuzzy))[:n]
    if kind == "cpu":
        by_norm = {" ".join(k): v[1] for k, v in _cpu_index().items()}
        fuzzy = difflib.get_close_matches(" ".join(_cpu_tokens(name)), by_norm, n=n, cutoff=0.6)
        return [by_norm[f] for f in fuzzy]
    raise ValueError(f"kind must be 'gpu' or 'cpu', got {kind!r}")


# --- CPU names --------------------------------------------------------------------------------

_CPU_DROP = frozenset({"", "cpu", "processor", "apu"})
_CPU_TRAILING_NOISE = frozenset({"radeon", "graphics", "compute", "cores", "vega", "mobile"})
_CPU_PATTERNS = (
    re.compile(r"\((?:r|tm|c)\)|®|™"),  # trademarks
    re.compile(r"@.*$"),  # "@ 2.30GHz" and anything after it
    re.compile(r"\(.*?\)"),  # "(Skylake, IBRS)", "(v8l)"
    re.compile(r"\b(?:with|w/)\s+radeon.*$"),
    re.compile(r"\b\d+(?:st|nd|rd|th)\s+gen(?:eration)?\b"),  # "11th Gen", "7th Gen"
    re.compile(r"\b(?:\d+|dual|quad|six|eight|ten|twelve|sixteen)[- ]cores?\b"),
    re.compile(r"\b\d+(?:\.\d+)?\s*[gm]hz\b"),
)


def _cpu_tokens(name: str) -> tuple[str, ...]:
    """Lower-case model tokens of a CPU name, with trademarks, clocks and filler words removed."""
    text = name.lower()
    for pattern in _CPU_PATTERNS:
        text = pattern.sub(" ", text)
    out: list[str] = []
    for token in re.split(r"[\s,\-_/]+", text):
        if token not in _CPU_DROP and (not out or out[-1] != token):
            out.append(token)
    return tuple(out)


@functools.cache
def _cpu_index() -> dict[tuple[str, ...], tuple[float, str]]:
    """Normalised name -> (TDP W, table name), read from the bundled table on first use."""
    index: dict[tuple[str, ...], tuple[float, str]] = {}
    for row in csv.DictReader(io.StringIO(_read_data("cpu_tdp.csv"))):
        index.setdefault(_cpu_tokens(row["name"]), (float(row["tdp_w"]), row["name"]))
    return index


# --- GPU names --------------------------------------------------------------------------------

_GPU_VENDOR_WORDS = frozenset(
    {"nvidia", "tesla", "amd", "instinct", "google", "cloud", "intel", "habana", "geforce"}
)
_GPU_NOISE = frozenset(
    {"gpu", "hbm2", "hbm2e", "hbm3", "hbm3e", "generation", "tensor", "core", "accelerator"}
    | {"graphics", "hgx", "dgx", "chip"}
)
_GPU_FORMS = frozenset({"sxm", "sxm2", "sxm3", "sxm4", "sxm5", "pcie", "nvl", "oam"})
_MEMORY = re.compile(r"^(\d+)gb$")


def _gpu_tokens(name: str) -> tuple[str, ...]:
    """Lower-case tokens of an accelerator name, without vendor words; "80 GB" becomes "80gb"."""
    text = name.lower().replace("pci-e", "pcie").replace("pci express", "pcie")
    text = re.sub(r"(\d+)\s*gb\b", r"\1gb", text)
    return tuple(t for t in re.split(r"[^a-z0-9]+", text) if t and t not in _GPU_VENDOR_WORDS)


def _model_tokens(spec: GpuSpec) -> tuple[str, ...]:
    return _gpu_tokens(spec.model)


def _model_span(spec: GpuSpec, tokens: tuple[str, ...]) -> tuple[int, int] | None:
    """Where the spec's model name sits in ``tokens`` (as words, or run together), or None."""
    model = _model_tokens(spec)
    for i in range(len(tokens) - len(model) + 1):
        if tokens[i : i + len(model)] == model:
            return i, i + len(model)
    joined = "".join(model)
    return next(((i, i + 1) for i, t in enumerate(tokens) if t == joined), None)


def _gpu_match(spec: GpuSpec, tokens: tuple[str, ...]) -> int:
    """How well ``tokens`` name ``spec``: 0 for no match, else the model's length in words.

    Ties between variants of one model go to the earlier row, which ``gpu_power_w`` keeps.
    """
    span = _model_span(spec, tokens)
    if span is None:
        return 0
    for token in tokens[: span[0]] + tokens[span[1] :]:
        memory = _MEMORY.match(token)
        if memory is not None:
            if int(memory.group(1)) not in spec.memory_gb:
                return 0
        elif token in _GPU_FORMS:
            if not any(f == token or (token == "sxm" and f.startswith("sxm")) for f in spec.forms):
                return 0
        elif token not in _GPU_NOISE:
            return 0
    return len(_model_tokens(spec))


@functools.cache
def _gpu_table() -> tuple[GpuSpec, ...]:
    rows = csv.DictReader(io.StringIO(_read_data("gpu_power.csv")))
    return tuple(
        GpuSpec(
            key=row["key"],
            vendor=row["vendor"],
            model=row["model"],
            variant=row["variant"],
            form_factor=row["form_factor"],
            forms=tuple(f for f in row["forms"].split("|") if f),
            memory_gb=tuple(int(m) for m in row["memory_gb"].split("|") if m),
            max_power_w=float(row["max_power_w"]),
            power_range_w=row["power_range_w"],
            power_metric=row["power_metric"],
            launch_year=int(row["launch_year"]),
            source=row["source"],
            source_kind=row["source_kind"],
        )
        for row in rows
    )


def _read_data(name: str) -> str:
    return (resources.files("backends") / "data" / name).read_text(encoding="utf-8")
