"""The client's version: written here only (client/pyproject.toml reads it from this file)."""

__version__ = "0.2.0"
