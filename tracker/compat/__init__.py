"""Drop-in replacements for other trackers: carbontracker's ``CarbonTracker`` and its arguments."""
