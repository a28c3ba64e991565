"""wattprint: per-epoch energy and carbon of ML training, from the hardware's own meters."""

__version__ = "0.1.0"
