"""The package version (read by setuptools and written into every run's config.json)."""

__version__ = "0.1.0"
