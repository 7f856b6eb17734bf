"""A package's public names, imported when first used (PEP 562), so importing the package (as the command
line does for its help) loads neither torch nor transformers until a name that needs them is used."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable


def exports(package: str, table: dict[str, str], fallback: Callable[[str], object] | None = None):
    """(`__getattr__`, `__dir__`) for `package`: `table` maps a public name to the module (relative to the
    package) that defines it; a submodule is imported by its name; any other name goes to `fallback`."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name], package), name)
            namespace[name] = value  # looked up once
            return value
        if fallback is not None:
            try:
                return fallback(name)
            except AttributeError:
                pass
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
