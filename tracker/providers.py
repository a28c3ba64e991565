"""Live grid-intensity providers, at the import path the README documents.

They live in ``tracker.carbon.providers``; this module names them where users import them.
"""

from tracker.carbon.providers import ElectricityMaps, GBCarbonIntensity

__all__ = ["ElectricityMaps", "GBCarbonIntensity"]
