"""The package version, read once from the installed metadata (pyproject.toml is its only source).

A module of its own, not the package's ``__init__``: the lower layers (profile provenance) need it,
and importing it from the root package, which imports those layers, would make an import circle.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("sparsetune")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
