"""The package version, in one place that every module can import (galaxy/__init__.py is a face)."""

__version__ = "0.1.0"
