"""``track``: measure a whole function call as one epoch, and keep its run at hand."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from tracker import arguments
from tracker.tracker import Tracker

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Tracked(Protocol[P, R_co]):
    """A function decorated with ``track``, called as before.

    ``last_run`` is the Tracker of its latest call (``run_dir``, ``summary``, ``epochs``), None
    before the first.
    """

    last_run: Tracker | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call the function, measured as one epoch."""
        ...


@overload
def track(func: Callable[P, R], /) -> Tracked[P, R]: ...
@overload
def track(
    func: None = None, /, **tracker_kwargs: Any
) -> Callable[[Callable[P, R]], Tracked[P, R]]: ...
def track(func: Callable[P, R] | None = None, /, **tracker_kwargs: Any) -> Any:
    """Decorator: the whole call of the decorated function is measured as one epoch.

    ``@track`` or ``@track(project="fit", location="DE")``; arguments are those of ``Tracker``.
    After a call, ``fit.last_run`` is the Tracker that measured it (``fit.last_run.summary``);
    during the call it is already that Tracker, so the function can count its work with
    ``fit.last_run.add_work(samples=...)`` for the call's energy per sample.
    """
    if func is not None:
        arguments.check_callable("track's argument", func)
    Tracker(**tracker_kwargs)  # checks the arguments now, not at the first call

    def decorate(function: Callable[P, R]) -> Tracked[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            tracked.last_run = tracker = Tracker(**tracker_kwargs)
            with tracker, tracker.epoch():
                return function(*args, **kwargs)

        tracked = cast("Tracked[P, R]", wrapper)
        tracked.last_run = None
        return tracked

    return decorate(func) if func is not None else decorate
