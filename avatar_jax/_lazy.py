"""Lazy attribute exports for package ``__init__`` modules (PEP 562), so importing a package
does not import its heavy modules (JAX, Flax) until a name is used."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], package_globals: dict):
    """``(__getattr__, __dir__)`` for ``package`` resolving ``exports`` (name -> module)."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(package_globals) | set(exports))

    return __getattr__, __dir__
