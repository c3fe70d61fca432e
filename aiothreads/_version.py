"""The package version, read by the build backend."""

__version__ = "1.2.0"
