"""A vendor library's process-wide session, shared by every meter that reads through it.

NVML and AMD SMI are initialised once per process and shut down when the last user lets go; each
meter holds a share (``SessionMeter``) from when it is made until ``close()``, and discovery holds
one while it looks. The count is ours, so a tracker's meters and another tracker's, made and
closed in any order, never shut the library down under each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from backends.base import Meter, MeterUnavailable

logger = logging.getLogger(__name__)


class CountedSession:
    """Init on the first ``acquire``, shutdown on the last ``release``; ``lock`` guards both.

    ``init`` and ``shutdown`` are the library's own calls; ``init``'s exceptions reach the caller
    of ``acquire`` (discovery turns them into a ``Missing``), ``shutdown``'s are logged.
    """

    def __init__(self, init: Callable[[], None], shutdown: Callable[[], None]) -> None:
        self.lock = threading.RLock()
        self._init = init
        self._shutdown = shutdown
        self._users = 0

    @property
    def held(self) -> bool:
        """Whether any share is held (the library is initialised)."""
        return self._users > 0

    def acquire(self) -> None:
        """Take a share of the session, initialising the library if none is held."""
        with self.lock:
            if self._users == 0:
                self._init()
            self._users += 1

    def release(self) -> None:
        """Give a share back; the last one shuts the library down."""
        with self.lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users > 0:
                return
            try:
                self._shutdown()
            except Exception as error:  # a failed shutdown changes nothing for the run
                logger.debug("library shutdown failed: %r", error)


class SessionMeter(Meter):
    """A meter holding a share of ``session`` from construction until ``close()`` (once)."""

    def __init__(self, session: CountedSession) -> None:
        session.acquire()
        self._session = session
        self._closed = False
        self._close_lock = threading.Lock()

    def close(self) -> None:
        """Give back this meter's share; the last one to close shuts the library down."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._session.release()

    def _check_open(self) -> None:
        """Raise ``MeterUnavailable`` for a read after ``close()``: the library was given back."""
        if self._closed:
            raise MeterUnavailable(f"{self.info.device}: read after close(), library given back")
