"""The package version, read once from the installed metadata (pyproject.toml is its only source).

A module of its own, not the package's ``__init__``: the lower layers (profile provenance) need it,
and importing it from the root package, which imports those layers, would make an import circle.
Read on first use: `importlib.metadata` costs about 20 ms of imports, more than all of
``import sparsetune`` needs otherwise.
"""

from __future__ import annotations

import functools

__all__ = ["__version__", "version"]


@functools.cache
def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sparsetune")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:  # PEP 562: `from sparsetune._version import __version__` reads it then
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
