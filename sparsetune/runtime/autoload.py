"""`import sparsetune` registers the `sparsetune` attention implementation with transformers, cheaply.

Registering needs transformers' `modeling_utils`, which with torch costs about 2.6 s of imports
(measured on this project's CPU box; `import sparsetune` alone is about 40 ms). Code that only reads
profiles, and the CLI's `show`, never touch transformers and should not pay that. So:

- `transformers.modeling_utils` already imported: register now (imports `sparsetune.runtime.hf_attention`,
  about 10 ms on top);
- otherwise: a one-shot import hook registers right after `transformers.modeling_utils` finishes
  executing, which is before any `from_pretrained(..., attn_implementation="sparsetune")` can run.

The hook is a plain `sys.meta_path` finder that wraps the real loader's `exec_module`; it removes
itself once it has fired and never changes what the module contains.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["install"]

_TARGET = "transformers.modeling_utils"


def _register() -> None:
    try:
        from . import hf_attention  # noqa: F401 - importing it registers the implementation
    except Exception as exc:  # noqa: BLE001 - never break the user's transformers import
        warnings.warn(f"sparsetune: could not register attn_implementation 'sparsetune' with transformers: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


class _Loader(importlib.abc.Loader):
    """The real loader, plus registration once the module has executed."""

    def __init__(self, loader: Any, finder: _Finder) -> None:
        self._loader, self._finder = loader, finder

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._finder.remove()
        _register()

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader, self)
        return spec

    def remove(self) -> None:
        # Not removed inside find_spec: the import system is iterating sys.meta_path there.
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> None:
    """Register now if transformers' modeling code is loaded, else when it gets loaded."""
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
