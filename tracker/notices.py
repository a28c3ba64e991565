"""Warnings emitted once per cause and kept for ``run.json``.

A sampler that fails every 0.5 s must not flood the user's log: each cause (a key such as
``meter:gpu0``) is logged the first time and remembered, so the run's record lists it once.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)
_instances: weakref.WeakSet[Notices] = weakref.WeakSet()


class Notices:
    """A thread-safe, de-duplicated list of the warnings a run raised.

    ``quiet`` (a Tracker with ``verbose=0``) logs them at INFO instead of WARNING: kept in
    run.json and the summary, shown only where the ``tracker.notices`` logger shows INFO.
    """

    def __init__(self, quiet: bool = False) -> None:
        self._level = logging.INFO if quiet else logging.WARNING
        self._lock = threading.RLock()  # a signal handler may warn while this thread holds it
        self._seen: set[str] = set()
        self._messages: list[str] = []
        _instances.add(self)

    def warn(self, key: str, message: str) -> bool:
        """Log ``message`` unless ``key`` was already warned about; True when it was new."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            self._messages.append(message)
        logger.log(self._level, "wattprint: %s", message)
        return True

    def shielded(
        self, key: str, what: str, action: Callable[[], object], consequence: str = ""
    ) -> bool:
        """Run ``action``; an ``Exception`` from it is warned about once per ``key`` and kept here.

        The message reads ``<what> failed: <error>[; <consequence>]``. True when ``action`` ran
        through. This is how user code the tracker calls (epoch callbacks, exporters) fails
        without reaching the training loop.
        """
        try:
            action()
        except Exception as error:
            tail = f"; {consequence}" if consequence else ""
            self.warn(key, f"{what} failed: {error!r}{tail}")
            return False
        return True

    def messages(self) -> list[str]:
        """Every warning so far, oldest first."""
        with self._lock:
            return list(self._messages)


def _renew_locks_in_child() -> None:
    """A forked child gets a fresh lock: the parent's sampler thread may have held the old one."""
    for notices in list(_instances):
        notices._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_in_child)
