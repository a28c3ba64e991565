"""AMD GPU meters through AMD SMI (the ``amdsmi`` Python package), else amdgpu's hwmon power.

Sources (the AMD SMI Python API reference, ROCm/amdsmi ``docs/reference/amdsmi-py-api.md``, and
the kernel's ``drivers/gpu/drm/amd/pm/amdgpu_pm.c``):

* ``amdsmi_get_energy_count(h)``: a 64-bit accumulator "since last restart/gpu reset" under the
  key ``energy_accumulator`` (``power`` before ROCm 6.4), in units of ``counter_resolution`` uJ
  (15.259 uJ, 2^-16 J, on the boards seen). Where it works it is read as a counter meter: exact
  at every epoch edge. It cannot wrap in practice (2^64 units is ~9000 years at 1 kW); a value
  that goes backwards is a GPU reset, which the sampler bridges from the preceding power.
  Not available in virtual-machine guests, and broken on some MI100s (ROCm/amdsmi#38), so the
  counter is checked at start: its rise over ``COUNTER_CHECK_S`` must agree with the power
  reading within a factor of ``COUNTER_RATIO`` either way, else power polling is used (with a
  note saying so).
* ``amdsmi_get_power_info(h)``: whole watts, or the string ``"N/A"`` where the ASIC lacks the
  field. ``socket_power`` (ROCm 7, whichever of the two below the ASIC has) is read first, then
  ``current_socket_power`` (MI300 and later) or ``average_socket_power`` (MI200, Navi and
  earlier), the generation's own field first.
* Without ``amdsmi``: the amdgpu hwmon files under ``class/drm/cardN/device/hwmon/hwmonM/`` of
  the sysfs root (``backends.sysfs``): ``power1_average`` ("average power used by the SoC in
  microWatts"; on APUs it includes the CPU), else ``power1_input`` (instantaneous, newer
  kernels), polled. hwmon has no energy file, so a note says that ``wattprint[amd]`` would give
  the exact counter.

``amdsmi`` is the PyPI package (``pip install 'wattprint[amd]'``, its version matching the ROCm
installed) or, when that is not importable, ROCm's own copy in ``$ROCM_PATH/share/amd_smi``
(``ROCM_PATH`` defaulting to ``/opt/rocm``), loaded from there without changing ``sys.path``.
Importing it can fail in several ways (no package: ``ImportError``; no ``libamd_smi.so``:
``OSError``; a package not matching the library: ``AttributeError`` or ``KeyError``) and it
prints to stdout when the library is missing: every way becomes the reason of the fallback,
and nothing reaches the user's stdout.

Which GPUs: HIP numbers devices in ROCr's order, which is not amd-smi's (PCI bus order; on an
MI350X "HIP index 0 may be amd-smi GPU 3"). Each GPU's physical HIP index is
``amdsmi_get_gpu_enumeration_info(h)["hip_id"]`` (ROCm 6.4+; taken to be the index HIP gives
with no visibility variable set, as Zeus takes it), else its KFD node
(``amdsmi_get_gpu_kfd_info(h)["node_id"]``, ROCr's enumeration), else PCI bus order; the hwmon
fallback uses PCI bus order. ``ROCR_VISIBLE_DEVICES`` picks among the physical GPUs (indices,
or ``GPU-`` UUIDs), then ``HIP_VISIBLE_DEVICES`` (or, when unset, ``CUDA_VISIBLE_DEVICES``,
which HIP honours too) among those, and the result is numbered ``gpu0``, ``gpu1``, ... as HIP
numbers them. An entry naming no GPU hides it and every later one, as the runtimes do.

MI250 and MI250X: each package holds two GCDs, seen as two GPUs, but only the first of the pair
(even amd-smi index) has a power sensor, reporting both dies; the second reads about 0 (Zeus and
CodeCarbon both found this). The first is metered with that scope written in its detail; the
second gets no meter of its own, never counted twice: a note when its partner is measured by
this process, a ``Missing`` naming the partner when it is not. MI300 parts are metered each on
its own, as Zeus does (CodeCarbon applies the two-die rule to MI3xx too; no source shows an
MI300 GPU reading 0).

APUs (an MI300A, or a Ryzen's integrated GPU: a KFD topology node with CPU cores and SIMDs):
their power is the whole socket's, CPU cores included ("On APUs this includes the CPU",
amdgpu_pm.c), so the meter's detail says ``scope=APU`` and discovery then leaves the CPU to it
rather than count those cores twice (``backends.discover``).

AMD SMI was not thread-safe before ROCm 7.2 (ROCm/amdsmi#115: the counter went backwards under
concurrent calls), so every call here holds one process-wide lock; ``amdsmi_init`` is called
once for all meters and ``amdsmi_shut_down`` when the last one closes.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeGuard

from backends import sysfs
from backends.base import (
    Found,
    Meter,
    MeterError,
    MeterInfo,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
    Method,
    Missing,
    Reading,
)
from backends.session import CountedSession, SessionMeter

logger = logging.getLogger(__name__)

COUNTER_CHECK_S = 0.25
"""The window over which the energy counter is compared with the power reading at start."""
COUNTER_RATIO = 10.0
"""The counter's average power must lie within this factor of the power reading, either way."""
LOCK_WAIT_S = 2.0
"""The longest a read waits for another amdsmi call (the library is serialised) before failing."""
VISIBILITY_VARIABLES = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")

INSTALL_FIX = (
    "pip install 'wattprint[amd]' (amdsmi, matching the installed ROCm version), or use ROCm's "
    "own copy: PYTHONPATH=$ROCM_PATH/share/amd_smi"
)
PERMISSION_FIX = (
    "add the user to the render and video groups (sudo usermod -aG render,video $USER, then log "
    "in again); in a container pass the devices: docker run --device /dev/kfd --device /dev/dri "
    "--group-add render --group-add video"
)
POWER_KEYS = ("socket_power", "current_socket_power", "average_socket_power")
HWMON_POWER_FILES = ("power1_average", "power1_input")

_AMD_VENDOR = "0x1002"
_BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_CARD = re.compile(r"card\d+")
_HWMON = re.compile(r"hwmon\d+")
_DUAL_DIE = re.compile(r"MI250", re.IGNORECASE)
_NEWER_GENERATION = re.compile(r"MI3\d\d", re.IGNORECASE)
_APU_MODEL = re.compile(r"MI300A", re.IGNORECASE)
APU_SCOPE = "scope=APU"
"""In a meter's detail: its figure is a whole APU socket's, the CPU cores included."""
_UJ_PER_J = 1e6

# AMD SMI statuses (``amdsmi_status_t``, amdsmi.h) and what each means for a meter; any other
# (BUSY, RETRY, TIMEOUT, IO, UNKNOWN_ERROR, ...) is a failed read.
_STATUS_ERRORS: dict[str, type[MeterError]] = {
    "AMDSMI_STATUS_NO_PERM": MeterPermissionError,
    "AMDSMI_STATUS_NOT_SUPPORTED": MeterUnavailable,
    "AMDSMI_STATUS_NOT_YET_IMPLEMENTED": MeterUnavailable,
    "AMDSMI_STATUS_NOT_FOUND": MeterUnavailable,
    "AMDSMI_STATUS_NOT_INIT": MeterUnavailable,
    "AMDSMI_STATUS_INIT_ERROR": MeterUnavailable,
    "AMDSMI_STATUS_FAIL_LOAD_MODULE": MeterUnavailable,
    "AMDSMI_STATUS_FAIL_LOAD_SYMBOL": MeterUnavailable,
    "AMDSMI_STATUS_DRIVER_NOT_LOADED": MeterUnavailable,
}
NO_PERM = "AMDSMI_STATUS_NO_PERM"
# ``AmdSmiRetCode`` member names differ between releases (``ERR_NO_PERM`` and ``NOT_IMPLEMENTED``
# in early ones, ``STATUS_NO_PERM`` and ``STATUS_NOT_YET_IMPLEMENTED`` later): all give the C name.
_RETCODE_NAME = re.compile(r"^(?:ERR_|STATUS_)?")
_RETCODE_ALIASES = {"NOT_IMPLEMENTED": "NOT_YET_IMPLEMENTED"}


def find_amd_gpus(
    wanted: Sequence[int | str] | None = None,
    first_index: int = 0,
    environ: Mapping[str, str] | None = None,
) -> Found:
    """A meter for each AMD GPU this process can use, and what cannot be measured and why.

    Devices are named ``gpu{first_index + k}`` for HIP device ``k`` (``first_index`` leaves room
    for another vendor's GPUs). ``wanted`` picks a subset by HIP index or ``GPU-`` UUID and
    raises ``ValueError`` (naming ``gpus``) for one that does not exist. ``environ`` holds the
    visibility variables (the process's environment when None). A machine without AMD GPUs
    gives an empty ``Found``; anything that fails becomes a ``Missing`` or a note, never an
    exception.
    """
    env = os.environ if environ is None else environ
    smi, why_not = _load_amdsmi()
    denied = False
    if smi is not None:
        try:
            _session.prepare(smi)
            _session.acquire()
        except _SMI_FAILURES as error:
            why_not = f"amdsmi could not start: {_describe_error(smi, error)}"
            denied = _status_name(smi, error) == NO_PERM
        else:
            try:
                handles = list(_session.call(smi, "amdsmi_get_processor_handles"))
            except _SMI_FAILURES as error:
                why_not = f"amdsmi could not list the GPUs: {_describe_error(smi, error)}"
                denied = _status_name(smi, error) == NO_PERM
                handles = []
            try:
                if handles:
                    gpus = _identify(smi, handles)
                    plan = _plan(gpus, wanted, first_index, env)
                    return _open_all(plan, _pairs(gpus), lambda s: _open_amdsmi(smi, s))
            finally:
                _session.release()
            if not why_not:  # the kernel may list GPUs that this user cannot open
                why_not = "amdsmi sees no GPU: this user may not open /dev/kfd and /dev/dri"
                return _find_with_hwmon(why_not, PERMISSION_FIX, False, wanted, first_index, env)
    fix = PERMISSION_FIX if denied else INSTALL_FIX
    return _find_with_hwmon(why_not, fix, denied, wanted, first_index, env)


# -- loading amdsmi ------------------------------------------------------------------------------

# ImportError (no package), OSError (no libamd_smi.so), AttributeError or KeyError (a package
# that does not match its library), or whatever else a third-party package's import raises.
_IMPORT_FAILURES = (Exception,)


def _load_amdsmi() -> tuple[ModuleType | None, str]:
    """The ``amdsmi`` module (PyPI's, else ROCm's copy), or None and why not.

    Whatever the import prints to stdout is kept from the user (sent to the debug log).
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            try:
                return importlib.import_module("amdsmi"), ""
            except _IMPORT_FAILURES as error:
                installed_error = error
            rocm = _rocm_copy()
            if rocm is None:
                if isinstance(installed_error, ModuleNotFoundError):
                    return None, "amdsmi is not installed"
                return None, f"amdsmi cannot be loaded: {installed_error!r}"
            return _import_from(rocm), ""
    except _IMPORT_FAILURES as error:
        return None, f"amdsmi cannot be loaded: {error!r}"
    finally:
        if printed.getvalue().strip():
            logger.debug("amdsmi printed at import: %s", printed.getvalue().strip())


def _rocm_copy() -> Path | None:
    """ROCm's own ``amdsmi`` package directory, where ROCm is installed."""
    rocm = Path(os.environ.get("ROCM_PATH") or "/opt/rocm")
    package = rocm / "share" / "amd_smi" / "amdsmi"
    return package if (package / "__init__.py").is_file() else None


def _import_from(package: Path) -> ModuleType:
    """Import the ``amdsmi`` package at ``package`` (its modules import each other relatively)."""
    spec = importlib.util.spec_from_file_location(
        "amdsmi", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import amdsmi from {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["amdsmi"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("amdsmi", None)
        raise
    return module


class _Session(CountedSession):
    """AMD SMI's process-wide session; ``smi`` is the library module in use while it is held."""

    def __init__(self) -> None:
        super().__init__(self._init_smi, self._shut_down_smi)
        self.smi: ModuleType | None = None

    def prepare(self, smi: ModuleType) -> None:
        """Use ``smi`` (the module discovery loaded) for the next session, unless one is held."""
        with self.lock:
            if not self.held:
                self.smi = smi

    def _init_smi(self) -> None:
        assert self.smi is not None
        self.smi.amdsmi_init(self.smi.AmdSmiInitFlags.INIT_AMD_GPUS)

    def _shut_down_smi(self) -> None:
        smi, self.smi = self.smi, None
        if smi is not None:
            smi.amdsmi_shut_down()

    def call(self, smi: ModuleType, function: str, *args: Any) -> Any:
        """One AMD SMI call, holding the lock (the library was not thread-safe before 7.2).

        Waits at most ``LOCK_WAIT_S`` for another call to finish: a call stuck in the driver
        raises ``TimeoutError`` here (a failed read) instead of stalling every other caller.
        """
        if not self.lock.acquire(timeout=LOCK_WAIT_S):
            raise TimeoutError(f"another amdsmi call has not returned for {LOCK_WAIT_S:g} s")
        try:
            return getattr(smi, function)(*args)
        finally:
            self.lock.release()


_session = _Session()
# What an AMD SMI call may raise: its own exceptions (subclasses of Exception), a missing symbol
# in a mismatched package, or the library failing to load.
_SMI_FAILURES = (Exception,)


def amdsmi_meter_error(smi: ModuleType, where: str, function: str, error: Exception) -> MeterError:
    """The ``MeterError`` for an exception that the AMD SMI call ``function`` raised for ``where``.

    The one mapping of AMD SMI statuses: NO_PERM gives ``MeterPermissionError``; a device or
    library that is gone or no longer supports the call (NOT_SUPPORTED, NOT_FOUND, NOT_INIT,
    INIT_ERROR, a library or symbol that fails to load, an ``AttributeError`` of a mismatched
    package) ``MeterUnavailable``; anything else (BUSY, RETRY, TIMEOUT, IO, a missing key)
    ``MeterReadError``. The message names the device, the call and the cause; raise it
    ``from error``.
    """
    if isinstance(error, AttributeError):
        kind: type[MeterError] = MeterUnavailable
    else:
        kind = _STATUS_ERRORS.get(_status_name(smi, error) or "", MeterReadError)
    return kind(f"{where}: {function} failed: {_describe_error(smi, error)}")


def _status_name(smi: ModuleType, error: BaseException) -> str | None:
    """The C status name (``AMDSMI_STATUS_NO_PERM``, ...) an ``AmdSmiLibraryException`` carries."""
    code = getattr(error, "err_code", None)
    codes = getattr(smi, "AmdSmiRetCode", None)
    if not isinstance(code, int) or codes is None:
        return None
    try:
        member = str(codes(code).name)
    except (ValueError, TypeError):
        return None
    core = _RETCODE_NAME.sub("", member, count=1)
    return f"AMDSMI_STATUS_{_RETCODE_ALIASES.get(core, core)}"


def _describe_error(smi: ModuleType, error: BaseException) -> str:
    """The error's own text and its status name, for messages."""
    name = _status_name(smi, error)
    text = str(error) or type(error).__name__
    return f"{text} ({name})" if name and name not in text else text


# -- the GPUs, whatever the source ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Gpu:
    """One physical GPU: its HIP index, how it is identified, and where it is read.

    ``handle`` is the amdsmi processor handle, or the hwmon directory; ``order`` is amd-smi's
    (PCI bus) position, which decides the two-die pairs of an MI250.
    """

    index: int
    order: int
    bdf: str
    model: str
    uuids: tuple[str, ...] = ()
    handle: Any = None
    error: str = ""
    error_status: str = ""
    apu: bool = False

    def label(self) -> str:
        """``bdf=... hip_id=N`` for messages."""
        return f"bdf={self.bdf} hip_id={self.index}"


@dataclass
class _Plan:
    """The GPUs this process uses, by HIP device number, and what could not be resolved."""

    slots: list[tuple[str, _Gpu]] = field(default_factory=list)
    found: Found = field(default_factory=Found)


def _plan(
    gpus: list[_Gpu], wanted: Sequence[int | str] | None, first_index: int, env: Mapping[str, str]
) -> _Plan:
    """Apply the visibility variables and ``wanted``; name the devices as HIP numbers them."""
    plan = _Plan()
    visible: list[_Gpu] = sorted(gpus, key=lambda gpu: gpu.index)
    hip = "HIP_VISIBLE_DEVICES" if env.get("HIP_VISIBLE_DEVICES") is not None else None
    for variable in ("ROCR_VISIBLE_DEVICES", hip or "CUDA_VISIBLE_DEVICES"):
        value = env.get(variable)
        if value is not None:
            visible = _apply_visibility(variable, value, visible, first_index, plan.found)
    for position in _select(wanted, visible, env):
        plan.slots.append((f"gpu{first_index + position}", visible[position]))
    return plan


def _apply_visibility(
    variable: str, value: str, gpus: list[_Gpu], first_index: int, found: Found
) -> list[_Gpu]:
    """The GPUs ``variable`` leaves visible, in its order; an entry naming none hides the rest."""
    kept: list[_Gpu] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry.startswith("-") and entry[1:].isdigit():
            break
        gpu, problem = _match(entry, gpus)
        if gpu is not None and gpu in kept:
            gpu, problem = None, "is listed twice"
        if gpu is None:
            device = f"gpu{first_index + len(kept)}"
            reason = f"{variable} entry {entry!r} {problem}; the runtime ignores it and the rest"
            fix = f"list only GPUs that exist: {_listing(gpus)}"
            found.missing.append(Missing("gpu", device, reason, fix))
            break
        kept.append(gpu)
    return kept


def _match(entry: str, gpus: Sequence[_Gpu]) -> tuple[_Gpu | None, str]:
    """The GPU that a position in ``gpus`` or (a prefix of) a ``GPU-`` UUID names."""
    if entry.isascii() and entry.isdigit():
        position = int(entry)
        return (gpus[position], "") if position < len(gpus) else (None, "names no GPU")
    if not entry.upper().startswith("GPU-"):
        return None, "is neither an index nor a GPU- UUID"
    wanted = entry[4:].lower()
    matches = [gpu for gpu in gpus if any(_bare(u).startswith(wanted) for u in gpu.uuids)]
    if not matches:
        return None, "names no GPU"
    if len(matches) > 1:
        return None, f"matches {len(matches)} GPUs"
    return matches[0], ""


def _bare(uuid: str) -> str:
    """A UUID without its ``GPU-`` prefix, lower case, for comparisons."""
    return uuid[4:].lower() if uuid.upper().startswith("GPU-") else uuid.lower()


def _select(
    wanted: Sequence[int | str] | None, visible: list[_Gpu], env: Mapping[str, str]
) -> list[int]:
    """Positions among the visible GPUs picked by ``wanted`` (all when None), without repeats."""
    if wanted is None:
        return list(range(len(visible)))
    picked: list[int] = []
    for item in wanted:
        gpu, problem = _match(str(item).strip(), visible)
        if gpu is None:
            shown = {name: env[name] for name in VISIBILITY_VARIABLES if name in env}
            raise ValueError(
                f"gpus: {item!r} {problem}; accepted: indices into the visible AMD GPUs or their "
                f"GPU- UUIDs; available: {_listing(visible)} ({shown or 'no visibility variable'})"
            )
        position = visible.index(gpu)
        if position not in picked:
            picked.append(position)
    return picked


def _listing(gpus: Sequence[_Gpu]) -> str:
    """``0 (bdf=..., GPU-...), 1 (...)`` for messages that list what exists."""
    return (
        ", ".join(
            f"{position} ({', '.join((gpu.bdf, *gpu.uuids[:1]))})"
            for position, gpu in enumerate(gpus)
        )
        or "none"
    )


def _pairs(gpus: Sequence[_Gpu]) -> dict[int, tuple[_Gpu, _Gpu]]:
    """For each GCD of an MI250/MI250X, keyed by HIP index, its package's (first, second) GCD.

    The GCDs of such parts are paired in amd-smi (PCI bus) order; the first's sensor reads both.
    """
    dual = sorted((gpu for gpu in gpus if _DUAL_DIE.search(gpu.model)), key=lambda g: g.order)
    pairs: dict[int, tuple[_Gpu, _Gpu]] = {}
    for k in range(0, len(dual) - 1, 2):
        pairs[dual[k].index] = pairs[dual[k + 1].index] = (dual[k], dual[k + 1])
    return pairs


# -- amdsmi ----------------------------------------------------------------------------------------


def _identify(smi: ModuleType, handles: list[Any]) -> list[_Gpu]:
    """Every GPU amdsmi lists, with its physical HIP index (see the module docstring)."""
    listed: list[_Gpu] = []
    hip_ids: list[int | None] = []
    kfd_nodes: list[int | None] = []
    for order, handle in enumerate(handles):
        enumeration = _optional(smi, "amdsmi_get_gpu_enumeration_info", handle)
        hip_ids.append(_int_or_none(enumeration.get("hip_id")))
        kfd_nodes.append(
            _int_or_none(_optional(smi, "amdsmi_get_gpu_kfd_info", handle).get("node_id"))
        )
        model = str(_optional(smi, "amdsmi_get_gpu_asic_info", handle).get("market_name") or "")
        try:
            bdf = str(_session.call(smi, "amdsmi_get_gpu_device_bdf", handle)).lower()
        except _SMI_FAILURES as error:
            listed.append(
                _Gpu(order, order, f"amd-smi GPU {order}", "AMD GPU", handle=handle,
                     error=_describe_error(smi, error), error_status=_status_name(smi, error) or "")
            )  # fmt: skip
            continue
        uuids = tuple(
            str(u) for u in (enumeration.get("hip_uuid"), _uuid(smi, handle)) if u and u != "N/A"
        )
        listed.append(_Gpu(order, order, bdf, model.strip() or "AMD GPU", uuids, handle))
    kfd = _kfd_gpus()
    return [
        replace(gpu, index=i, apu=bool(_APU_MODEL.search(gpu.model)) or kfd.get(gpu.bdf, _GPU)[1])
        for gpu, i in zip(listed, _hip_order(hip_ids, kfd_nodes), strict=True)
    ]


def _hip_order(hip_ids: list[int | None], kfd_nodes: list[int | None]) -> list[int]:
    """Each amd-smi GPU's HIP index: ``hip_id`` where all have a distinct one, else KFD order."""
    count = len(hip_ids)
    for keys in (hip_ids, kfd_nodes):
        known = [k for k in keys if k is not None]
        if len(known) == count and len(set(known)) == count:
            ranked = sorted(range(count), key=lambda i: known[i])
            return [ranked.index(i) for i in range(count)]
    return list(range(count))


def _optional(smi: ModuleType, function: str, handle: Any) -> dict[str, Any]:
    """A query that older ROCm releases lack: its dict, or empty when absent or failing."""
    if not hasattr(smi, function):
        return {}
    try:
        result = _session.call(smi, function, handle)
    except _SMI_FAILURES:
        return {}
    return result if isinstance(result, dict) else {}


def _uuid(smi: ModuleType, handle: Any) -> str:
    try:
        return str(_session.call(smi, "amdsmi_get_gpu_device_uuid", handle))
    except _SMI_FAILURES:
        return ""


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class AmdSmiMeter(SessionMeter):
    """One GPU read through amdsmi; holds a share of the process-wide session until closed."""

    method: ClassVar[Method]
    fast = True  # one locked library call reading the driver's metrics table

    def __init__(self, info: MeterInfo, smi: ModuleType, handle: Any, power_key: str | None):
        _session.prepare(smi)
        super().__init__(_session)
        self.info = info
        self._smi = smi
        self._handle = handle
        self._power_key = power_key

    def _call(self, function: str) -> tuple[Any, float]:
        """One amdsmi query on this GPU, with the monotonic time it returned."""
        self._check_open()
        try:
            value = _session.call(self._smi, function, self._handle)
        except _SMI_FAILURES as error:
            where = f"{self.info.device} ({self.info.detail})"
            raise amdsmi_meter_error(self._smi, where, function, error) from error
        return value, time.monotonic()

    def _power_w(self) -> tuple[float, float]:
        """The power reading in watts and when it was taken; ``MeterError`` when there is none."""
        info, t_s = self._call("amdsmi_get_power_info")
        key = self._power_key or ""
        value = info.get(key) if isinstance(info, dict) else None
        watts = _watts(value)
        if watts is None:
            raise MeterReadError(
                f"{self.info.device} ({self.info.detail}): amdsmi_get_power_info gave "
                f"{key}={value!r}, not a power in W"
            )
        return watts, t_s


class AmdSmiCounterMeter(AmdSmiMeter):
    """The GPU's energy accumulator, exact at every read."""

    method: ClassVar[Method] = "counter"

    def read(self) -> Reading:
        """Energy since the last GPU reset (accumulator x resolution uJ), in joules."""
        count, t_s = self._call("amdsmi_get_energy_count")
        energy_uj = _energy_uj(count)
        if energy_uj is None:
            raise MeterReadError(
                f"{self.info.device} ({self.info.detail}): amdsmi_get_energy_count gave "
                f"{count!r}, not an energy count"
            )
        return Reading(t_s=t_s, energy_j=energy_uj / _UJ_PER_J)

    def power_hint_w(self) -> float | None:
        """The power reading, or None where the GPU has none."""
        if self._power_key is None:
            return None
        try:
            return self._power_w()[0]
        except MeterError:
            return None


class AmdSmiPowerMeter(AmdSmiMeter):
    """Power polling, for a GPU whose counter is missing or failed its check at start."""

    method: ClassVar[Method] = "power"

    def read(self) -> Reading:
        """The GPU's power reading (amdsmi gives whole watts), in watts."""
        watts, t_s = self._power_w()
        return Reading(t_s=t_s, power_w=watts)


def _energy_uj(count: object) -> float | None:
    """Micro-joules from an ``amdsmi_get_energy_count`` dict (either key name), or None."""
    if not isinstance(count, dict):
        return None
    accumulator = count.get("energy_accumulator", count.get("power"))
    resolution = count.get("counter_resolution")
    if not (_number(accumulator) and _number(resolution)):
        return None
    return float(accumulator) * float(resolution)


def _watts(value: object) -> float | None:
    """A power field in W, or None for ``"N/A"`` and anything else that is not a number."""
    return float(value) if _number(value) else None


def _number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a non-negative number (not ``"N/A"``, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _power_key(info: object, model: str) -> str | None:
    """The power field this GPU fills: the unified one, then its generation's, then the other."""
    if not isinstance(info, dict):
        return None
    newer = bool(_NEWER_GENERATION.search(model))
    order = POWER_KEYS if newer else (POWER_KEYS[0], POWER_KEYS[2], POWER_KEYS[1])
    return next((key for key in order if _watts(info.get(key)) is not None), None)


@dataclass
class _Probe:
    """What a GPU offered at discovery: its power field and counter, before the check."""

    device: str
    gpu: _Gpu
    detail: str
    power_key: str | None = None
    counter: tuple[float, float] | None = None  # (monotonic s, uJ) at the start of the check
    problem: Missing | None = None


def _open_amdsmi(
    smi: ModuleType, slots: list[tuple[str, _Gpu, str]]
) -> list[Meter | Missing | str]:
    """Probe every GPU, check the counters over one shared window, then open the meters."""
    probes = [_probe(smi, device, gpu, detail) for device, gpu, detail in slots]
    if any(p.counter is not None for p in probes):
        time.sleep(COUNTER_CHECK_S)
    opened: list[Meter | Missing | str] = []
    for probe in probes:
        opened.extend(_decide(smi, probe))
    return opened


def _probe(smi: ModuleType, device: str, gpu: _Gpu, detail: str) -> _Probe:
    probe = _Probe(device, gpu, detail)
    if gpu.error:
        probe.problem = _unreadable(device, gpu, gpu.error, gpu.error_status)
        return probe
    try:
        probe.power_key = _power_key(
            _session.call(smi, "amdsmi_get_power_info", gpu.handle), gpu.model
        )
    except _SMI_FAILURES as error:
        if _status_name(smi, error) == NO_PERM:
            probe.problem = _unreadable(device, gpu, _describe_error(smi, error), NO_PERM)
            return probe
    try:
        energy_uj = _energy_uj(_session.call(smi, "amdsmi_get_energy_count", gpu.handle))
    except _SMI_FAILURES:
        energy_uj = None
    if energy_uj is not None:
        probe.counter = (time.monotonic(), energy_uj)
    return probe


def _decide(smi: ModuleType, probe: _Probe) -> list[Meter | Missing | str]:
    """The meter a probed GPU gets (counter if it passes the check, else power), and notes."""
    if probe.problem is not None:
        return [probe.problem]
    gpu, device = probe.gpu, probe.device
    notes: list[Meter | Missing | str] = []
    if probe.counter is not None:
        doubt = _check_counter(smi, probe)
        if doubt is None:
            info = MeterInfo(device, "gpu", gpu.model, "counter", False, probe.detail)
            return [AmdSmiCounterMeter(info, smi, gpu.handle, probe.power_key)]
        notes.append(f"{device} ({gpu.model}, {gpu.label()}): {doubt}; measured by power polling")
    if probe.power_key is None:
        reason = f"{gpu.model} ({gpu.label()}) gives neither a working energy counter nor power"
        fix = "no software fix: check the GPU with `amd-smi metric --power --energy`"
        return [*notes, Missing("gpu", device, reason, fix)]
    detail = f"{probe.detail} field={probe.power_key}"
    info = MeterInfo(device, "gpu", gpu.model, "power", False, detail)
    return [*notes, AmdSmiPowerMeter(info, smi, gpu.handle, probe.power_key)]


def _check_counter(smi: ModuleType, probe: _Probe) -> str | None:
    """Why the counter cannot be trusted, or None: its rise must match the power reading."""
    assert probe.counter is not None
    t0_s, start_uj = probe.counter
    try:
        end_uj = _energy_uj(_session.call(smi, "amdsmi_get_energy_count", probe.gpu.handle))
        t1_s = time.monotonic()
        power = _session.call(smi, "amdsmi_get_power_info", probe.gpu.handle)
    except _SMI_FAILURES as error:
        return f"the energy counter failed its check ({_describe_error(smi, error)})"
    if end_uj is None or t1_s <= t0_s:
        return "the energy counter failed its check (no second reading)"
    counter_w = (end_uj - start_uj) / _UJ_PER_J / (t1_s - t0_s)
    if counter_w <= 0:
        return f"the energy counter did not advance over {t1_s - t0_s:.2f} s (ROCm/amdsmi#38)"
    power_w = _watts(power.get(probe.power_key)) if isinstance(power, dict) else None
    if power_w is None or power_w == 0:
        return None  # nothing to compare with: the counter advances, which is all one can check
    ratio = counter_w / power_w
    if 1 / COUNTER_RATIO <= ratio <= COUNTER_RATIO:
        return None
    return (
        f"the energy counter disagrees with the power reading at start ({counter_w:.4g} W from "
        f"the counter over {t1_s - t0_s:.2f} s, {power_w:.4g} W reported: ratio {ratio:.3g}, "
        f"outside {1 / COUNTER_RATIO:g}-{COUNTER_RATIO:g})"
    )


def _unreadable(device: str, gpu: _Gpu, error: str, status: str) -> Missing:
    """The ``Missing`` for a GPU amdsmi cannot query: a permission fix, or a device check."""
    reason = f"amdsmi cannot query {gpu.model} ({gpu.label()}): {error}"
    if status == NO_PERM:
        return Missing("gpu", device, reason, PERMISSION_FIX)
    return Missing(
        "gpu", device, reason, "check the GPU and this user's access with `amd-smi list`"
    )


# -- both sources: naming, the two-die pairs, opening ---------------------------------------------

_Opener = Callable[[list[tuple[str, _Gpu, str]]], list[Meter | Missing | str]]


def _open_all(plan: _Plan, pairs: dict[int, tuple[_Gpu, _Gpu]], opener: _Opener) -> Found:
    """Open a meter for every planned GPU, giving each MI250 package one meter, never two."""
    found = plan.found
    used = {gpu.index: device for device, gpu in plan.slots}
    to_open: list[tuple[str, _Gpu, str]] = []
    for device, gpu in plan.slots:
        pair = pairs.get(gpu.index)
        detail = " ".join((gpu.label(), *(f"uuid={u}" for u in gpu.uuids[:1])))
        if pair is None:
            to_open.append((device, gpu, f"{detail} {APU_SCOPE if gpu.apu else 'scope=GPU'}"))
            continue
        carrier, partner = pair
        if carrier is not gpu:  # the second GCD: its power is in its partner's sensor
            carried_by = used.get(carrier.index)
            if carried_by is not None:
                found.notes.append(
                    f"{device} ({gpu.model} GCD, {detail}) has no power sensor of its own: "
                    f"{carried_by} covers both GCDs of its package, so it is counted there"
                )
                continue
            reason = (
                f"{gpu.model} GCD ({detail}) has no power sensor of its own: the package's "
                f"power is read on its other GCD ({carrier.label()}), which this process does "
                "not use"
            )
            fix = (
                "count this package on the process that uses its other GCD, or make both GCDs "
                "visible here (ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES)"
            )
            found.missing.append(Missing("gpu", device, reason, fix))
            continue
        scope = f"scope=package (both GCDs: bdf={gpu.bdf} and bdf={partner.bdf})"
        to_open.append((device, gpu, f"{detail} {scope}"))
        if partner.index not in used:
            found.notes.append(
                f"{device} ({gpu.model} GCD, {detail}) reads the power of its whole package, "
                f"including the other GCD ({partner.label()}), which this process does not use"
            )
    for opened in opener(to_open):
        if isinstance(opened, str):
            found.notes.append(opened)
        else:
            found.add(opened)
    return found


# -- hwmon fallback --------------------------------------------------------------------------------


def _find_with_hwmon(
    why_no_amdsmi: str,
    fix: str,
    refused: bool,
    wanted: Sequence[int | str] | None,
    first_index: int,
    env: Mapping[str, str],
) -> Found:
    """Power meters on amdgpu's hwmon files, for when amdsmi cannot be used, and why not.

    ``fix`` is what would let amdsmi work; ``refused`` says amdsmi refused this user, which is
    reported even where sysfs shows no GPU (a container without the host's /sys).
    """
    gpus = _hwmon_gpus()
    if not gpus:
        return Found(missing=[Missing("gpu", "gpu", why_no_amdsmi, fix)]) if refused else Found()
    plan = _plan(gpus, wanted, first_index, env)
    opener: _Opener = lambda slots: [_open_hwmon(*slot, fix) for slot in slots]  # noqa: E731
    found = _open_all(plan, _pairs(gpus), opener)
    if found.meters and why_no_amdsmi:
        found.notes.append(
            f"AMD GPUs measured by polling hwmon power ({why_no_amdsmi}); amdsmi's energy "
            f"counter would be exact: {fix}"
        )
    return found


def _hwmon_gpus() -> list[_Gpu]:
    """Every card under ``class/drm`` with an amdgpu hwmon directory, numbered as HIP does.

    Cards of other drivers (an old Radeon on ``radeon``) have no such directory and are left out.
    """
    drm = sysfs.sysfs_path("class", "drm")
    try:
        cards = sorted(name for name in sysfs.list_entries(drm) if _CARD.fullmatch(name))
    except OSError:
        return []
    found: dict[str, _Gpu] = {}
    for card in cards:
        device = drm / card / "device"
        bdf = os.path.basename(os.path.realpath(device)).lower()
        if not _BDF.fullmatch(bdf) or bdf in found or _text(device / "vendor") != _AMD_VENDOR:
            continue
        hwmon = _hwmon_dir(device)
        if hwmon is None:
            continue
        model = _text(device / "product_name") or f"AMD GPU {_text(device / 'device')}".strip()
        uuid = _text(device / "unique_id")
        found[bdf] = _Gpu(0, 0, bdf, model, (f"GPU-{uuid}",) if uuid else (), hwmon)
    listed = [replace(gpu, order=i) for i, gpu in enumerate(sorted(found.values(), key=_by_bdf))]
    kfd = _kfd_gpus()
    nodes = [kfd[gpu.bdf][0] if gpu.bdf in kfd else None for gpu in listed]
    return [
        replace(gpu, index=index, apu=kfd.get(gpu.bdf, _GPU)[1])
        for gpu, index in zip(listed, _hip_order(nodes, nodes), strict=True)
    ]


def _by_bdf(gpu: _Gpu) -> str:
    return gpu.bdf


_GPU = (0, False)  # what ``_kfd_gpus`` says of a GPU it does not list: not an APU


def _kfd_gpus() -> dict[str, tuple[int, bool]]:
    """Each GPU of the KFD topology (ROCr's own list) by PCI address: its node, and if an APU.

    ``class/kfd/kfd/topology/nodes/N/properties`` holds ``key value`` lines; a GPU node has SIMDs
    (``simd_count``), an APU's node CPU cores as well (``cpu_cores_count``), and its address is
    ``domain`` and ``location_id`` (bus << 8 | device << 3 | function). ROCr enumerates GPUs in
    node order, which is therefore HIP's.
    """
    nodes = sysfs.sysfs_path("class", "kfd", "kfd", "topology", "nodes")
    try:
        names = [name for name in sysfs.list_entries(nodes) if name.isascii() and name.isdigit()]
    except OSError:
        return {}
    gpus: dict[str, tuple[int, bool]] = {}
    for name in names:
        properties: dict[str, int] = {}
        for line in _text(nodes / name / "properties").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isascii() and value.strip().isdigit():
                properties[key] = int(value)
        if not properties.get("simd_count") or "location_id" not in properties:
            continue  # a CPU node, or one this reader cannot place
        location, domain = properties["location_id"], properties.get("domain", 0)
        bdf = f"{domain:04x}:{location >> 8 & 0xFF:02x}:{location >> 3 & 0x1F:02x}.{location & 7}"
        gpus[bdf] = (int(name), properties.get("cpu_cores_count", 0) > 0)
    return gpus


def _hwmon_dir(device: Path) -> Path | None:
    """The card's amdgpu hwmon directory (``device/hwmon/hwmonN`` named ``amdgpu``)."""
    try:
        names = sorted(n for n in sysfs.list_entries(device / "hwmon") if _HWMON.fullmatch(n))
    except OSError:
        return None
    return next(
        (device / "hwmon" / n for n in names if _text(device / "hwmon" / n / "name") == "amdgpu"),
        None,
    )


def _text(path: Path) -> str:
    """A short sysfs attribute's text, or ``""`` when it cannot be read."""
    try:
        return sysfs.read_attribute(path).strip()
    except OSError:
        return ""


def _open_hwmon(device: str, gpu: _Gpu, detail: str, fix: str) -> Meter | Missing:
    """A power meter on the first hwmon power file that reads, else why not (with ``fix``)."""
    hwmon: Path = gpu.handle
    errors: list[OSError | ValueError] = []
    for name in HWMON_POWER_FILES:
        try:
            sysfs.read_uint(hwmon / name)
        except (OSError, ValueError) as error:
            errors.append(error)
            continue
        info = MeterInfo(device, "gpu", gpu.model, "power", False, f"{detail} hwmon={name}")
        return sysfs.HwmonPowerMeter(info, hwmon / name)
    denied = [e for e in errors if isinstance(e, PermissionError)]
    shown = "; ".join(str(e) for e in errors)
    reason = f"{gpu.model} ({gpu.label()}): no readable hwmon power file ({shown})"
    return Missing("gpu", device, reason, PERMISSION_FIX if denied else fix)
