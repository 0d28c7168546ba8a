"""The package version (one place; the CLI and the package root read it)."""

__version__ = "0.1.0"
