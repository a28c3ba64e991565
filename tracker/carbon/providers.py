"""Live grid-intensity providers: Electricity Maps and the GB Carbon Intensity API.

Each fetches on its own daemon thread, caches what it got with a refresh period, times out fast,
and answers ``mean_g_per_kwh`` from its cache, or from a static fallback location (with a warning
recorded for run.json) until data arrives or whenever a fetch fails. Nothing here runs unless the
user creates a provider: wattprint makes no network request of its own accord.
"""

from __future__ import annotations

import abc
import json
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from typing import Any

from tracker.carbon.intensity import (
    MAX_SERIES_POINTS,
    IntensitySource,
    Provenance,
    Steps,
    check_span,
    intensity_value,
)
from tracker.carbon.locations import Location, resolve, world
from tracker.units import parse_utc


class _LiveSource(IntensitySource):
    """Fetches points on a daemon thread every ``refresh_s``; answers from them or the fallback."""

    def __init__(
        self,
        provenance: Provenance,
        fallback: Location,
        refresh_s: float,
        timeout_s: float,
        secret: str = "",
    ) -> None:
        for arg, value in (("refresh_s", refresh_s), ("timeout_s", timeout_s)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{arg} must be a positive number of seconds, got {value!r}")
        fb = f"fallback {fallback.code}: {fallback.source}, {fallback.year}"
        super().__init__(replace(provenance, source=f"{provenance.source}; {fb}"))
        self.fallback = fallback
        self.refresh_s = float(refresh_s)
        self.timeout_s = float(timeout_s)
        self._secret = secret
        self._steps: Steps | None = None  # replaced whole by the fetch thread, never mutated
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wattprint-intensity", daemon=True)

    def mean_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        check_span(start_unix_s, end_unix_s)
        steps = self._steps
        if steps is None:
            if not self._ready.is_set():
                self._warn("pending", f"{self.provenance.label}: no data yet; {self._fallback()}")
            with self._lock:
                last = next(reversed(self._used.values()), None)
            if last != self.fallback.g_per_kwh:  # one point per stretch on the fallback
                self._record([(float(start_unix_s), self.fallback.g_per_kwh)])
            return self.fallback.g_per_kwh
        mean, first, last = steps.mean(start_unix_s, end_unix_s)
        self._record(steps.points(first, last))
        return mean

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the first fetch has finished, either way; False on timeout."""
        return self._ready.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=0.1)  # a fetch in flight ends on its own (daemon thread)

    @abc.abstractmethod
    def _fetch(self) -> list[tuple[float, float]]:
        """Fetch (unix_s, g_per_kwh) points; raise ``_FetchError`` with a short reason."""

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.refresh_s
            try:
                points = self._fetch()
                known = self._steps.points(0, len(self._steps.times) - 1) if self._steps else []
                merged = dict([*known, *points])
                times = sorted(merged)[-10 * MAX_SERIES_POINTS :]
                self._steps = Steps(times, [merged[t] for t in times])
                with self._lock:
                    self._warned.discard("fetch")  # a later failure is news again
            except Exception as error:  # the thread must survive any response
                reason = str(error) if isinstance(error, _FetchError) else repr(error)
                if self._secret:
                    reason = reason.replace(self._secret, "***")
                self._warn("fetch", f"{self.provenance.label}: {reason}; {self._fallback()}")
                delay = min(self.refresh_s, 60.0)
            self._ready.set()
            self._stop.wait(delay)

    def _fallback(self) -> str:
        if self._steps is not None:
            return "holding the last value received"
        fb = self.fallback
        return f"using {fb.code} {fb.g_per_kwh:g} g/kWh ({fb.source}, {fb.year}) instead"


class ElectricityMaps(_LiveSource):
    """Live intensity of an Electricity Maps zone (API v3 ``carbon-intensity/latest``, hourly).

    The token comes from env ``ELECTRICITYMAPS_TOKEN`` and is sent only in the ``auth-token``
    header, never in provenance, series or warnings. ``fallback`` defaults to the zone's country,
    else the world average.
    """

    def __init__(
        self,
        zone: str,
        *,
        fallback: Location | str | None = None,
        emission_factor_type: str = "lifecycle",
        refresh_s: float = 900.0,
        timeout_s: float = 5.0,
        base_url: str = "https://api.electricitymaps.com/v3",
    ) -> None:
        if not isinstance(zone, str) or not zone.strip():
            raise ValueError(f"zone must be an Electricity Maps zone such as 'DE', got {zone!r}")
        if emission_factor_type not in ("lifecycle", "direct"):
            raise ValueError(
                f"emission_factor_type must be lifecycle or direct: {emission_factor_type!r}"
            )
        self.zone = zone.strip()
        self._token = os.environ.get("ELECTRICITYMAPS_TOKEN", "").strip()
        query = {"zone": self.zone, "emissionFactorType": emission_factor_type}
        self._url = (
            f"{base_url.rstrip('/')}/carbon-intensity/latest?{urllib.parse.urlencode(query)}"
        )
        basis = f"{emission_factor_type} g CO2e/kWh of the zone's consumed electricity, hourly"
        provenance = Provenance(
            f"electricitymaps:{self.zone}",
            f"Electricity Maps API v3, zone {self.zone}",
            None,
            basis,
        )
        fallback_place = _fallback(fallback, self.zone)
        super().__init__(provenance, fallback_place, refresh_s, timeout_s, secret=self._token)
        if self._token:
            self._start()
        else:
            self._ready.set()
            self._warn(
                "token", f"{provenance.label}: ELECTRICITYMAPS_TOKEN is not set; {self._fallback()}"
            )

    def _fetch(self) -> list[tuple[float, float]]:
        doc = _get_json(self._url, {"auth-token": self._token}, self.timeout_s)
        try:
            return [(parse_utc(doc["datetime"]), intensity_value(doc["carbonIntensity"]))]
        except (KeyError, TypeError, ValueError) as error:
            raise _FetchError(f"unexpected response ({error!r})") from None


class GBCarbonIntensity(_LiveSource):
    """Live intensity of Great Britain's grid from the NESO Carbon Intensity API (no key).

    National by default (``/intensity``: the published actual, else the forecast); ``postcode``
    (outward part, e.g. ``"RG10"``) or ``region_id`` (1-17) picks a regional forecast.
    """

    def __init__(
        self,
        *,
        postcode: str | None = None,
        region_id: int | None = None,
        fallback: Location | str | None = None,
        refresh_s: float = 1800.0,
        timeout_s: float = 5.0,
        base_url: str = "https://api.carbonintensity.org.uk",
    ) -> None:
        base = base_url.rstrip("/")
        where, self._url = "national", f"{base}/intensity"
        if postcode is not None and region_id is not None:
            raise ValueError("pass postcode or region_id, not both")
        if postcode is not None:
            outward = str(postcode).strip().split(" ")[0].upper()
            if not (2 <= len(outward) <= 4 and outward.isalnum()):
                raise ValueError(f"postcode must be a GB postcode such as 'RG10', got {postcode!r}")
            where, self._url = outward, f"{base}/regional/postcode/{outward}"
        elif region_id is not None:
            if isinstance(region_id, bool) or region_id not in range(1, 18):
                raise ValueError(f"region_id must be an integer 1-17, got {region_id!r}")
            where, self._url = f"region {region_id}", f"{base}/regional/regionid/{region_id}"
        self._regional = where != "national"
        label = "gb-carbon-intensity" + (f":{where}" if self._regional else "")
        basis = (
            "operational g CO2/kWh of GB electricity generation incl. imports and network losses, "
            "half-hourly; not lifecycle"
        )
        provenance = Provenance(label, f"NESO Carbon Intensity API, {where}", None, basis)
        super().__init__(provenance, _fallback(fallback, "GB"), refresh_s, timeout_s)
        self._start()

    def _fetch(self) -> list[tuple[float, float]]:
        doc = _get_json(self._url, {}, self.timeout_s)
        try:
            entry = doc["data"][0]["data"][0] if self._regional else doc["data"][0]
            reading = entry["intensity"]
            actual = None if self._regional else reading.get("actual")
            value = reading["forecast"] if actual is None else actual
            return [(parse_utc(entry["from"]), intensity_value(value))]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise _FetchError(f"unexpected response ({error!r})") from None


# --------------------------------------------------------------------------------------------
# Helpers


class _FetchError(Exception):
    """A live fetch failed; the message is a short reason without secrets."""


def _fallback(fallback: Location | str | None, zone: str) -> Location:
    if isinstance(fallback, Location):
        return fallback
    if fallback is not None:
        return resolve(fallback)
    for candidate in (zone, zone.split("-")[0]):
        try:
            return resolve(candidate)
        except ValueError:
            continue
    return world()


def _get_json(url: str, headers: dict[str, str], timeout_s: float) -> Any:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "wattprint", **headers}
    )
    opener = urllib.request.build_opener()  # reads the proxy settings from the environment now
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = response.read(2_000_001)
    except urllib.error.HTTPError as error:
        raise _FetchError(f"HTTP {error.code} from the provider") from None
    except (urllib.error.URLError, OSError) as error:
        raise _FetchError(f"request failed ({getattr(error, 'reason', error)})") from None
    if len(body) > 2_000_000:
        raise _FetchError("response larger than 2 MB")
    try:
        return json.loads(body)
    except ValueError:
        raise _FetchError("response is not valid JSON") from None
