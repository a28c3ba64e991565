"""The epochs of a run as its hooks and signals cut them: numbers, the open epoch, running totals.

Pure bookkeeping: the ``Tracker`` takes the cuts (sampler snapshots), builds the records and writes
them. A signal closes the open epoch as partial; if the program lives on, the rest of that epoch
is its second part, with the same epoch number, also partial.
"""

from __future__ import annotations

from tracker.measure.epochs import Totals, sum_optional
from tracker.measure.sampler import MeterSnapshot
from tracker.records import EpochRecord

Cut = tuple[float, dict[str, MeterSnapshot]]
"""An epoch edge: its monotonic time and each meter's cumulative figures there."""


class EpochBook:
    """The completed epochs, their running totals, and the epoch open now (if any)."""

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []
        self.totals = Totals()  # running, so run.json costs the same after any number of epochs
        self.number = 0  # the user's epoch number: both parts of a split epoch keep it
        self.open: Cut | None = None
        self.signalled: EpochRecord | None = None  # the part a signal closed, for epoch_end
        self.last_cut: Cut = (0.0, {})
        self._split = False  # the open epoch is the part of an epoch after a signal's cut
        self.samples: int | None = None  # the work counted in the open epoch (None: none)
        self.tokens: int | None = None

    def check_closed(self) -> None:
        """``ValueError`` while an epoch is open (``epoch_start`` twice)."""
        if self.open is not None:
            raise ValueError(
                f"epoch_start() called while epoch {self.number} is open; call epoch_end() first"
            )

    def begin(self, cut: Cut) -> None:
        """Open the next epoch at ``cut``."""
        self.check_closed()
        self.open, self.signalled = cut, None
        self.number += 1
        self.samples = self.tokens = None

    def end(self, cut: Cut) -> tuple[Cut, bool]:
        """Close the open epoch at ``cut``: its start and whether it is a part (partial)."""
        assert self.open is not None
        start, split = self.open, self._split
        self.open, self._split, self.last_cut = None, False, cut
        return start, split

    def keep(self, record: EpochRecord) -> None:
        """Count a closed epoch's record."""
        self.records.append(record)
        self.totals.add(record)

    def resume(self) -> bool:
        """Reopen the epoch a signal closed, from the cut, as its second part.

        Called once the program lived on after the signal; False when no epoch was closed by one.
        """
        if self.signalled is None:
            return False
        self.open, self.signalled, self._split = self.last_cut, None, True
        self.samples = self.tokens = None  # the first part took the work counted before the cut
        return True

    def count(self, samples: int | None, tokens: int | None) -> None:
        """Add work to the open epoch's (None adds nothing)."""
        self.samples = sum_optional((self.samples, samples))
        self.tokens = sum_optional((self.tokens, tokens))
