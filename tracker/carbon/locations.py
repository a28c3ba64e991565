"""Grid carbon intensity by location: countries, US and Indian states, cloud regions.

Every value comes from the bundled tables in ``tracker/data`` (see ``sources.json`` there) and
carries its year, basis and source. Tables are read on first use and cached; nothing is read at
import time.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import io
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["Location", "format_locations", "resolve", "search", "world"]

_HINT = (
    "Use an ISO2/ISO3 country code, a country name, US-CA/IN-KA style states, "
    "or aws:/gcp:/azure:<region>; `wattprint locations` lists them"
)


@dataclass(frozen=True, slots=True)
class Location:
    """A place and the grid carbon intensity (g CO2e per kWh) used for it, with provenance."""

    code: str
    name: str
    g_per_kwh: float
    year: int
    basis: str
    source: str
    default_pue: float | None
    alternatives: tuple[tuple[str, float, int, str], ...] = ()


def resolve(location: str) -> Location:
    """The place ``location`` names: ISO2/ISO3 code, country name, ``US-CA``/``IN-KA``, ``aws:...``.

    Case-insensitive; accents and extra spaces are ignored. Unknown -> ``ValueError`` listing near
    matches; not a ``str`` -> ``ValueError`` saying what is accepted.
    """
    if not isinstance(location, str):
        raise ValueError(f"location must be a str, got {location!r}. {_HINT}")
    cat = _catalogue()
    code = cat.keys.get(_norm(location))
    if code is None:
        suggestions = _suggest(location)
        did_you_mean = f"; did you mean: {', '.join(suggestions)}?" if suggestions else "."
        raise ValueError(f"location {location.strip()!r} is not known{did_you_mean} {_HINT}")
    return cat.locations[code]


def search(query: str | None = None) -> list[Location]:
    """Locations whose code, name or alias contains ``query``, then close matches; None -> all."""
    if query is not None and not isinstance(query, str):
        raise ValueError(f"query must be a str such as 'germany' or 'aws:', got {query!r}")
    cat = _catalogue()
    if query is None or not query.strip():
        return list(cat.locations.values())
    q = _norm(query)
    exact = cat.keys.get(q)
    codes: list[str] = [exact] if exact else []
    codes += [code for code, text in cat.text.items() if q in text]
    if not codes:
        close = difflib.get_close_matches(q, list(cat.keys), n=8, cutoff=0.7)
        codes = [cat.keys[k] for k in close]
    return [cat.locations[c] for c in dict.fromkeys(codes)]


def world() -> Location:
    """The fallback when no location is set: Ember's World aggregate."""
    loc = _catalogue().locations["WORLD"]
    return dataclasses.replace(
        loc,
        basis=f"{loc.basis}; world average, used because no location was set",
    )


def format_locations(locations: Sequence[Location]) -> str:
    """A text table (code, name, g/kWh, year, basis, source); one location also gets its details."""
    if not locations:
        return "no matching location; `wattprint locations` lists them all"
    header = ("CODE", "NAME", "G/KWH", "YEAR", "BASIS", "SOURCE")
    rows = [
        (
            loc.code,
            loc.name,
            f"{loc.g_per_kwh:.1f}",
            str(loc.year),
            _short(loc.basis, "basis_short"),
            _short(loc.source, "label"),
        )
        for loc in locations
    ]
    caps = (24, 28, 7, 4, 33, 22)
    widths = [min(cap, max(len(r[i]) for r in [header, *rows])) for i, cap in enumerate(caps)]
    lines = [_format_row(header, widths)] + [_format_row(r, widths) for r in rows]
    lines.append(f"{len(locations)} location(s), g CO2e per kWh.")
    if any("state dataset" in loc.basis for loc in locations):
        lines.append("Ember's state values are a different dataset from its country values.")
    if len(locations) == 1:
        lines += _details(locations[0])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Loading and indexing


@dataclass(frozen=True, slots=True)
class _Catalogue:
    locations: dict[str, Location]  # code -> Location, in table order
    keys: dict[str, str]  # normalised code/name/alias -> code
    display: dict[str, str]  # code -> "Name (CODE)" for suggestions
    text: dict[str, str]  # code -> normalised searchable text (code, names, aliases, country)
    short: dict[str, dict[str, str]]  # long basis/source text -> short label


@functools.lru_cache(maxsize=1)
def _catalogue() -> _Catalogue:
    sources: dict[str, dict[str, str]] = json.loads(_read("sources.json"))["sources"]
    locations: dict[str, Location] = {}
    keys: dict[str, str] = {}
    short: dict[str, dict[str, str]] = {"basis_short": {}, "label": {}}
    for meta in sources.values():
        short["basis_short"][meta["basis"]] = meta["basis_short"]
        short["label"][_source_text(meta)] = meta["label"]

    text: dict[str, str] = {}

    def add_keys(code: str, *names: str, weak: bool = False) -> None:
        text[code] = " | ".join(filter(None, [text.get(code, ""), *map(_norm, names)]))
        for name in names:
            key = _norm(name)
            if key and (not weak or key not in keys):
                keys.setdefault(key, code)

    countries = _rows("grid_countries.csv")
    for r in countries:
        loc = _grid_location(r, r["name"], sources)
        locations[loc.code] = loc
        add_keys(loc.code, r["code"], r["iso3"], r["name"], *_split(r["aliases"]))
    country_names = {r["code"]: r["name"] for r in countries}

    for table, country in (("grid_us_states.csv", "US"), ("grid_india_states.csv", "IN")):
        for r in _rows(table):
            total = r["code"].endswith("-TOTAL")
            name = r["name"] if total else f"{r['name']}, {country_names[country]}"
            loc = _grid_location(r, name, sources)
            national = locations[country]
            loc = dataclasses.replace(loc, alternatives=(_alt(national, "Ember country table"),))
            locations[loc.code] = loc
            add_keys(loc.code, r["code"], name, *_split(r["aliases"]))
            add_keys(loc.code, r["name"], weak=True)  # a country of the same name wins
            if total:
                alt = _alt(loc, "Ember state dataset")
                locations[country] = dataclasses.replace(national, alternatives=(alt,))

    pue = {r["provider"]: float(r["pue"]) for r in _rows("pue_defaults.csv")}
    published: dict[str, dict[str, tuple[float, int]]] = {}
    for r in _rows("cloud_region_intensity.csv"):
        published.setdefault(r["code"], {})[r["source_id"]] = (
            float(r["g_per_kwh"]),
            int(r["year"]),
        )
    for r in _rows("cloud_regions.csv"):
        loc = _cloud_location(r, locations, published.get(r["code"], {}), sources)
        locations[loc.code] = dataclasses.replace(loc, default_pue=pue.get(r["provider"]))
        add_keys(loc.code, loc.code)
        places = [locations[c].name for c in (r["country"], r["state"]) if c]
        text[loc.code] = " | ".join(map(_norm, [loc.code, loc.name, *places]))
    regions = [(code.split(":", 1)[1], code) for code in locations if ":" in code]
    for region, code in regions:  # a bare region name, where only one provider has it
        if sum(1 for other, _ in regions if other == region) == 1:
            add_keys(code, region, weak=True)

    display = {
        code: f"{code} ({loc.name})" if ":" in code else f"{loc.name} ({code})"
        for code, loc in locations.items()
    }
    return _Catalogue(locations, keys, display, text, short)


def _grid_location(row: dict[str, str], name: str, sources: dict[str, Any]) -> Location:
    meta = sources[row["source_id"]]
    return Location(
        code=row["code"],
        name=name,
        g_per_kwh=float(row["g_per_kwh"]),
        year=int(row["year"]),
        basis=meta["basis"],
        source=_source_text(meta),
        default_pue=None,
    )


def _cloud_location(
    row: dict[str, str],
    locations: dict[str, Location],
    published: dict[str, tuple[float, int]],
    sources: dict[str, Any],
) -> Location:
    """Google's own figure if published, else the Ember state value, else the Ember country one."""
    options: list[tuple[str, float, int, str, str]] = []  # label, g, year, basis, source
    values = dict(published)
    google = values.pop("google-region-carbon", None)
    if google is not None:
        meta = sources["google-region-carbon"]
        options.append((meta["title"], *google, meta["basis"], _source_text(meta)))
    for code, label in (
        (row["state"], "Ember state dataset"),
        (row["country"], "Ember country table"),
    ):
        if code:
            place = locations[code]
            basis = f"{place.basis}; region located in {place.name}"
            options.append(
                (f"{label}: {place.name}", place.g_per_kwh, place.year, basis, place.source)
            )
    for source_id, (g, year) in values.items():
        meta = sources[source_id]
        options.append((meta["title"], g, year, meta["basis"], _source_text(meta)))
    _, g, year, basis, source = options[0]
    return Location(
        code=row["code"],
        name=row["name"],
        g_per_kwh=g,
        year=year,
        basis=basis,
        source=source,
        default_pue=None,
        alternatives=tuple((label, v, y, b) for label, v, y, b, _ in options[1:]),
    )


def _alt(loc: Location, label: str) -> tuple[str, float, int, str]:
    return (f"{label}: {loc.name} ({loc.code})", loc.g_per_kwh, loc.year, loc.basis)


def _read(name: str) -> str:
    return (resources.files("tracker") / "data" / name).read_text(encoding="utf-8")


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read(name))))


def _split(aliases: str) -> list[str]:
    return [a for a in aliases.split(";") if a]


def _source_text(meta: dict[str, str]) -> str:
    return f"{meta['title']}, {meta['licence']}"


def _norm(text: str) -> str:
    """Casefold, drop accents, collapse spaces: 'Türkiye ' -> 'turkiye'."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split())


def _suggest(location: str) -> list[str]:
    """Up to five near matches, best first (ties in table order)."""
    cat = _catalogue()
    query = _norm(location)
    scored: dict[str, float] = {}
    for key, code in cat.keys.items():
        matcher = difflib.SequenceMatcher(None, query, key)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            score = matcher.ratio()
            if score >= 0.6 and score > scored.get(code, 0.0):
                scored[code] = score
    order = {code: i for i, code in enumerate(cat.locations)}
    best = sorted(scored, key=lambda c: (-scored[c], order[c]))[:5]
    return [cat.display[c] for c in best]


def _short(text: str, kind: str) -> str:
    table = _catalogue().short[kind]
    if text in table:
        return table[text]
    for long, short in table.items():
        if text.startswith(long):
            return short
    return text


def _format_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    out = []
    for cell, width in zip(cells, widths, strict=True):
        text = cell if len(cell) <= width else cell[: width - 1] + "…"
        out.append(text.rjust(width) if cell[:1].isdigit() else text.ljust(width))
    return "  ".join(out).rstrip()


def _details(loc: Location) -> list[str]:
    lines = ["", f"{loc.name} ({loc.code}): {loc.g_per_kwh:g} g/kWh, {loc.year}"]
    lines.append(f"  basis:  {loc.basis}")
    lines.append(f"  source: {loc.source}")
    if loc.default_pue is not None:
        lines.append(f"  default PUE: {loc.default_pue:g} (Green Algorithms, CC BY 4.0)")
    for label, g, year, basis in loc.alternatives:
        lines.append(f"  also published: {g:g} g/kWh ({year}), {label}; {basis}")
    return lines
