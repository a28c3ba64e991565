"""Work counts given as torch tensors, as a training step has them (``batch.shape[0]``, sums)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.ledger import LedgerMeter, tracker_on


def test_zero_dimensional_tensors_count_and_others_are_refused(tmp_path: Path) -> None:
    meter = LedgerMeter()
    with tracker_on(meter, tmp_path, "torch") as tracker:
        tracker.epoch_start()
        with pytest.raises(ValueError, match=r"^samples must be None or a whole number"):
            tracker.add_work(samples=torch.tensor([1, 2]))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^tokens must be None or a whole number"):
            tracker.add_work(tokens=torch.tensor(2.5))  # type: ignore[arg-type]
        tracker.add_work(samples=torch.tensor(8), tokens=torch.tensor(80))  # type: ignore[arg-type]
        record = tracker.epoch_end(tokens=torch.tensor(20))  # type: ignore[arg-type]
    assert (record.samples, record.tokens) == (8, 100)
