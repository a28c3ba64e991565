"""Everyday equivalents and offset cost of gCO2e, at the import path the README documents.

They live in ``tracker.carbon.equivalents``; this module names them where users import them.
"""

from tracker.carbon.equivalents import equivalents, offset_cost

__all__ = ["equivalents", "offset_cost"]
