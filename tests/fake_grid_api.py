"""A local stand-in for the grid-intensity APIs, serving responses of the real shapes.

Electricity Maps v3 ``/carbon-intensity/latest`` and the GB Carbon Intensity API ``/intensity``,
``/regional/postcode/<outward>`` and ``/regional/regionid/<id>``, on 127.0.0.1 only. ``mode``
makes it misbehave: ``"slow"`` holds each reply until ``close()`` (or 5 s), ``"error"`` answers
500, ``"garbage"`` answers 200 with HTML, ``"shape"`` answers 200 with JSON of another shape.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeGridApi:
    """A threaded HTTP server on 127.0.0.1 (port 0); use as a context manager."""

    def __init__(self, token: str = "") -> None:
        self.mode = "normal"
        self.token = token
        self.em_intensity: float = 322.0
        self.em_datetime = "2025-03-01T12:00:00.000Z"
        self.gb_actual: float | None = 175.0
        self.gb_forecast = 180.0
        self.gb_regional_forecast = 143.0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeGridApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """The status and body for a GET of ``path``."""
        self.requests.append((path, headers))
        if self.mode == "slow":
            self.release.wait(5.0)
        if self.mode == "error":
            return 500, b'{"error": "internal"}'
        if self.mode == "garbage":
            return 200, b"<html><body>Service temporarily unavailable</body></html>"
        if self.mode == "shape":
            return 200, json.dumps({"status": "ok", "payload": []}).encode()
        url = urllib.parse.urlsplit(path)
        if url.path == "/v3/carbon-intensity/latest":
            if headers.get("auth-token") != self.token:
                return 401, b'{"message": "Invalid auth-token"}'
            zone = urllib.parse.parse_qs(url.query).get("zone", [""])[0]
            return 200, _json(self._em_latest(zone))
        if url.path == "/intensity":
            period = _gb_period(self.gb_forecast, self.gb_actual, regional=False)
            return 200, _json({"data": [period]})
        if url.path.startswith("/regional/"):
            return 200, _json({"data": [self._gb_region(url.path)]})
        return 404, b'{"error": "not found"}'

    def _em_latest(self, zone: str) -> dict[str, Any]:
        return {
            "zone": zone,
            "carbonIntensity": self.em_intensity,
            "datetime": self.em_datetime,
            "updatedAt": "2025-03-01T12:41:07.482Z",
            "createdAt": "2025-02-26T12:44:18.313Z",
            "emissionFactorType": "lifecycle",
            "isEstimated": True,
            "estimationMethod": "TIME_SLICER_AVERAGE",
            "temporalGranularity": "hourly",
        }

    def _gb_region(self, path: str) -> dict[str, Any]:
        period = _gb_period(self.gb_regional_forecast, None, regional=True)
        period["generationmix"] = [
            {"fuel": "gas", "perc": 31.2},
            {"fuel": "wind", "perc": 38.5},
            {"fuel": "nuclear", "perc": 14.1},
        ]
        region: dict[str, Any] = {
            "regionid": 12,
            "dnoregion": "SSE South",
            "shortname": "South England",
            "data": [period],
        }
        if "/postcode/" in path:
            region["postcode"] = path.rsplit("/", 1)[-1]
        return region


def _gb_period(forecast: float, actual: float | None, *, regional: bool) -> dict[str, Any]:
    intensity: dict[str, Any] = {"forecast": forecast, "index": "moderate"}
    if not regional:  # regional readings carry no "actual"
        intensity["actual"] = actual
    return {"from": "2025-03-01T12:00Z", "to": "2025-03-01T12:30Z", "intensity": intensity}


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _handler_for(api: FakeGridApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = api.respond(self.path, {k.lower(): v for k, v in self.headers.items()})
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout); nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler
