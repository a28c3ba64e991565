"""Checks of what users hand to ``Tracker``: each error names the argument and what it accepts.

They run in the constructor, before any work starts, so a typo fails at once with a
``ValueError`` raised here rather than deep inside ``pathlib`` or a backend an hour into the run.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Literal

from backends.attribution import ATTRIBUTIONS, Attribution
from backends.attribution import ENV as ATTRIBUTION_ENV
from backends.base import COMPONENTS, Component, Meter
from backends.discover import RAPL_READERS, RaplReader

MAX_NAME_BYTES = 255  # the longest file name Linux and macOS file systems take
MAX_INTERVAL_S = 3600.0
"""The longest sampling period, in seconds: a meter read once an hour at most would leave
power-only meters integrated across an hour of guesswork."""
MIN_INTERVAL_S = 0.05
"""The shortest sampling period, in seconds. A read of every meter costs the sampler thread
0.1-1 ms of CPU and GIL, so 20 reads a second keep it near 1% of a core at worst; NVML power
refreshes every 20-100 ms and Hopper's energy counter every 100 ms, so a shorter period reads
the same values again (``interval=1e-9`` slowed training ninefold)."""


def name(argument: str, value: object) -> str:
    """A name usable as exactly one directory level inside ``log_dir`` (``project``, ``run_id``).

    Letters, digits and printable punctuation; no path separator, no control character (a
    newline would split a CSV row or a log line), not ``.`` or ``..`` and no surrounding space.
    """
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or value != value.strip()
        or any(c in "/\\" or not c.isprintable() for c in value)
        or len(value.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
    ):
        raise ValueError(
            f"{argument} must be a name for one directory level (printable characters, no '/' "
            f"or '\\', not '.' or '..', no leading or trailing space, at most {MAX_NAME_BYTES} "
            f"bytes), got {value!r}"
        )
    return value


def new_run_id(prefix: str = "") -> str:
    """A fresh run id: UTC time to the second, then 6 random hex digits (``prefix`` first)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    return f"{prefix}{'' if not prefix or prefix.endswith(('-', '_')) else '-'}{stamp}"


def integer(argument: str, value: object, minimum: int) -> int:
    """``value`` if it is an int of at least ``minimum`` (a bool is not): a count such as epochs."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")
    return value


MAX_WORK = 2**63 - 1
"""The largest count of samples or tokens one call takes (the largest int64), far beyond any run,
so a run's per-unit figures stay finite floats."""


def work(argument: str, value: object) -> int | None:
    """A count of work (``samples``, ``tokens``): None (not counted) or a whole number >= 0.

    Anything with ``__index__`` counts (numpy and 0-d integer torch values); a bool, a float or a
    negative number does not.
    """
    if value is None:
        return None
    try:
        count = operator.index(value)  # type: ignore[arg-type]  # checked by the call itself
    except TypeError:
        count = -1
    if isinstance(value, bool) or not 0 <= count <= MAX_WORK:
        raise ValueError(
            f"{argument} must be None or a whole number of {argument} from 0 to {MAX_WORK} "
            f"(an int, numpy or 0-d torch integer), got {value!r}"
        )
    return count


def seconds(argument: str, value: object, minimum: float = 0.0, maximum: float = math.inf) -> float:
    """A finite number of seconds greater than 0, at least ``minimum`` and at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{argument} must be a positive number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"{argument} must be a positive number of seconds (> 0), got {value}")
    if value < minimum:
        raise ValueError(f"{argument} must be at least {minimum:g} seconds, got {value:g}")
    if value > maximum:
        raise ValueError(f"{argument} must be at most {maximum:g} seconds, got {value:g}")
    return float(value)


def check_fresh_run_dir(argument: str, run_dir: Path) -> None:
    """Refuse a run directory that already holds something: reusing one would mix two runs.

    This is the early check, when the Tracker is made; ``LogWriter`` claims the directory's files
    atomically at start, for trackers that race to the same one.
    """
    with contextlib.suppress(OSError):
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise ValueError(
                f"{argument}: {run_dir} already holds a run; choose another {argument} (or leave "
                "it out for a new one) or remove that directory"
            )


def components(value: object) -> tuple[Component, ...]:
    """A non-empty selection from ``COMPONENTS``, returned in their canonical order."""
    accepted = f"components must be a non-empty sequence drawn from {COMPONENTS}, got {value!r}"
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise ValueError(accepted)
    if not all(isinstance(c, str) for c in value):
        raise ValueError(accepted)
    chosen = tuple(c for c in COMPONENTS if c in value)
    if not chosen or any(c not in COMPONENTS for c in value):
        raise ValueError(accepted)
    return chosen


def directory(argument: str, value: object) -> Path:
    """A path given as ``str`` or ``os.PathLike`` (it need not exist yet)."""
    if not isinstance(value, str | os.PathLike) or not isinstance(os.fspath(value), str):
        raise ValueError(f"{argument} must be a directory path (str or os.PathLike), got {value!r}")
    if not os.fspath(value) or "\0" in os.fspath(value):
        raise ValueError(f"{argument} must be a non-empty path without NUL bytes, got {value!r}")
    return Path(value)


def verbosity(value: object) -> int:
    """``verbose``: 0 (quiet) or 1 (a line per epoch and one per run); a bool also does."""
    if not isinstance(value, int) or value not in (0, 1):
        raise ValueError(f"verbose must be 0 (quiet) or 1 (a line per epoch), got {value!r}")
    return int(value)


def attribution(value: object) -> Attribution:
    """``host``, ``process`` or ``auto``; None: env ``WATTPRINT_ATTRIBUTION``, else ``auto``."""
    argument = "attribution"
    if value is None:
        value = os.environ.get(ATTRIBUTION_ENV) or "auto"
        argument = f"env {ATTRIBUTION_ENV}"
    for accepted in ATTRIBUTIONS:
        if value == accepted:
            return accepted
    raise ValueError(f"{argument} must be one of {', '.join(ATTRIBUTIONS)}, got {value!r}")


SyncMode = bool | Literal["auto"]


def sync_mode(value: object) -> SyncMode:
    """``sync``: ``"auto"`` (CUDA initialised by torch), ``True`` (always) or ``False`` (never)."""
    if value is True or value is False or value == "auto":
        return "auto" if value == "auto" else bool(value)
    raise ValueError(
        f"sync must be 'auto' (synchronise CUDA at edges once torch has initialised it), True "
        f"or False, got {value!r}"
    )


def rapl_reader(value: object) -> RaplReader:
    """``rapl_reader``: ``"powercap"`` (the kernel's files) or ``"pyrapl"``."""
    for reader in RAPL_READERS:
        if value == reader:
            return reader
    raise ValueError(f"rapl_reader must be one of {RAPL_READERS}, got {value!r}")


def check_meters(value: object) -> None:
    """``meters``: None (discover them) or a sequence of ``backends.base.Meter`` instances."""
    if value is None:
        return
    if not isinstance(value, Sequence) or not all(isinstance(m, Meter) for m in value):
        raise ValueError(f"meters must be a sequence of backends.Meter instances, got {value!r}")
    devices = [m.info.device for m in value]
    if len(set(devices)) != len(devices):
        raise ValueError(f"meters must each name a different device, got {devices}")


def check_callbacks(value: object) -> None:
    """``on_epoch_end``: a sequence of callables, each taking an ``EpochRecord``."""
    if not isinstance(value, Sequence) or not all(callable(fn) for fn in value):
        raise ValueError(
            "on_epoch_end must be a sequence of callables taking an EpochRecord "
            f"(e.g. [print]), got {value!r}"
        )


def check_gpus(value: object) -> None:
    """``gpus``: None (every visible GPU) or a sequence of indices and ``GPU-`` UUIDs."""
    if value is None:
        return
    if isinstance(value, str) or not isinstance(value, Sequence):
        ok = False
    else:
        ok = all(_is_gpu_key(item) for item in value)
    if not ok:
        raise ValueError(
            "gpus must be a sequence of visible-GPU indices (ints >= 0) or GPU- UUIDs, "
            f"e.g. [0, 1]; got {value!r}"
        )


def check_callable(argument: str, value: object) -> Callable[..., object]:
    """A function to decorate or call back."""
    if not callable(value):
        raise ValueError(f"{argument} must be a function, got {value!r}")
    return value


def _is_gpu_key(item: object) -> bool:
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return item >= 0
    return isinstance(item, str) and bool(item.strip()) and not item.strip().startswith(("-", "+"))
