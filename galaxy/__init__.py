"""galaxy: batch classification of galaxy morphology (spiral / elliptical)."""

__version__ = "0.1.0"
