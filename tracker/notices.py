"""Warnings emitted once per cause and kept for ``run.json``.

A sampler that fails every 0.5 s must not flood the user's log: each cause (a key such as
``meter:gpu0``) is logged the first time and remembered, so the run's record lists it once.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("wattprint")


class Notices:
    """A thread-safe, de-duplicated list of the warnings a run raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._messages: list[str] = []

    def warn(self, key: str, message: str) -> bool:
        """Log ``message`` unless ``key`` was already warned about; True when it was new."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            self._messages.append(message)
        logger.warning("wattprint: %s", message)
        return True

    def messages(self) -> list[str]:
        """Every warning so far, oldest first."""
        with self._lock:
            return list(self._messages)
