"""massedit: mass model editing (EAMET, MEMIT and baselines) as a reproducible pipeline."""

__version__ = "0.1.0"
