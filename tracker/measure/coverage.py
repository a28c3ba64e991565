"""What a run measures of each component: measured, partly measured, estimated or not measured.

One state per component, from the meters discovery found and the ``Missing`` entries it kept:
an estimate stands in for a whole component (its ``Missing`` entries say why the real meter
failed), while a component with real meters on some devices and ``Missing`` entries for others
is measured only in part, and says so everywhere its total appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from backends.base import Component, Meter, MeterInfo, Missing

State = Literal["measured", "partial", "estimated", "not measured"]


@dataclass(frozen=True, slots=True)
class Coverage:
    """One component's state, the meters that measure it and what could not be measured."""

    component: Component
    state: State
    meters: tuple[MeterInfo, ...]
    missing: tuple[Missing, ...]

    def line(self) -> str:
        """One short line for the start of a run (the fixes are in ``wattprint devices``)."""
        why = "; ".join(dict.fromkeys(m.reason for m in self.missing))
        if self.state == "estimated":
            return f"{self.component} estimated" + (f": {why}" if why else "")
        if self.state == "partial":
            devices = ", ".join(m.device for m in self.missing)
            return f"{self.component} measured in part: {devices} not measured ({why})"
        return f"{self.component} not measured" + (f": {why}" if why else "")


def coverage(
    meters: Sequence[Meter], missing: Sequence[Missing], components: Sequence[Component]
) -> list[Coverage]:
    """The state of each of ``components``, in their order.

    ``other`` is left out where nothing measures it and nothing says why: no whole-node meter
    exists here, so there is no rest of the node to report.
    """
    result = []
    for component in components:
        infos = tuple(m.info for m in meters if m.info.component == component)
        gaps = tuple(m for m in missing if m.component == component)
        if component == "other" and not infos and not gaps:
            continue
        state: State
        if not infos:
            state = "not measured"
        elif any("estimate" in (i.method, i.attribution) for i in infos):  # a MIG slice too
            state = "estimated"
        elif gaps:
            state = "partial"
        else:
            state = "measured"
        result.append(Coverage(component, state, infos, gaps))
    return result


def coverage_lines(
    meters: Sequence[Meter], missing: Sequence[Missing], components: Sequence[Component]
) -> list[str]:
    """A short line for each component that is not fully measured."""
    return [c.line() for c in coverage(meters, missing, components) if c.state != "measured"]


def not_measured(
    meters: Sequence[Meter], missing: Sequence[Missing], components: Sequence[Component]
) -> list[Missing]:
    """What has no meter at all: the ``Missing`` entries no estimate stands in for."""
    return [
        gap
        for c in coverage(meters, missing, components)
        if c.state != "estimated"
        for gap in c.missing
    ]


def uncovered(meters: Sequence[Meter], missing: Sequence[Missing]) -> frozenset[Component]:
    """Components measured on some devices while others have no meter."""
    components = tuple(dict.fromkeys(m.component for m in missing))
    return frozenset(
        c.component for c in coverage(meters, missing, components) if c.state == "partial"
    )
