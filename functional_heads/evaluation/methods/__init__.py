"""Methods by name: the registry (`registry.py`) and the built-in methods (`builtin.py`), registered on import."""

from . import builtin  # noqa: F401  (registers the built-in methods)
from .registry import (
                       ENTRY_POINT_GROUP,
                       METHODS,
                       Generation,
                       Method,
                       NotFoldable,
                       get_method,
                       load_plugins,
                       method_names,
                       register_method,
)

__all__ = ["ENTRY_POINT_GROUP", "METHODS", "Generation", "Method", "NotFoldable", "get_method", "load_plugins",
           "method_names", "register_method"]
