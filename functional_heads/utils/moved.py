"""Old import paths of modules and names that moved, kept working for users' code with a warning.

`MODULES` maps an old module path to its new one: `import functional_heads.check` gives a stand-in that
forwards every attribute to `functional_heads.core.check`. `NAMES` maps (old module, name) to the module
that holds the name now, for a package's `__getattr__`. Both are resolved when first used, so they add no
import between the package's layers; the library itself imports the new paths only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MODULES = {f"functional_heads.{old}": f"functional_heads.{new}" for old, new in {
    "architectures": "models.architectures", "compat": "models.compat", "loading": "models.loading",
    "kimi_vl": "models.kimi_vl",
    "config": "core.config", "ratios": "core.ratios", "heads": "core.heads", "rescale": "core.rescale",
    "dynamic": "core.dynamic", "export": "core.export", "check": "core.check",
    "progress": "utils.progress", "figures": "utils.plotting",
    "cli": "apps.cli", "demo": "apps.demo",
    "bundled": "testbed.bundled", "families": "testbed.families", "testing": "testbed.tiny",
    "wordlevel": "testbed.wordlevel",
    "evaluation.tuning": "tuning.study", "evaluation.tune_report": "tuning.report",
    "evaluation.run_folders": "evaluation.runs",
    "evaluation.baselines": "evaluation.methods.contrastive", "evaluation.agla": "evaluation.methods.agla",
    "evaluation.cgd": "evaluation.methods.cgd",
    "evaluation.shapes_generator": "evaluation.benchmarks.shapes_generator",
    "evaluation.answers": "evaluation.benchmarks.answers",
}.items()}

NAMES = {("functional_heads.evaluation", name): "functional_heads.tuning"
         for name in ("tune", "TuneSettings", "SearchSpace")}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path will be removed in functional-heads 0.2.",
                  DeprecationWarning, stacklevel=3)


class _Forward(types.ModuleType):
    """A stand-in for a moved module: every attribute is the new module's."""

    def __init__(self, old: str, new: str):
        super().__init__(old, f"Moved to {new}.")
        self.__dict__["_target"] = new

    def __getattr__(self, name: str):
        return getattr(importlib.import_module(self.__dict__["_target"]), name)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_target"]))


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        _warn(spec.name, MODULES[spec.name])
        return _Forward(spec.name, MODULES[spec.name])

    def exec_module(self, module):
        pass


def install() -> None:
    """Let the old module paths import (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        # first in line: the path finder would take functional_heads/bundled/ (a data folder) as a package
        sys.meta_path.insert(0, _MovedFinder())


def forward_names(package: str):
    """A module `__getattr__` for `package`: its moved submodules (`MODULES`, e.g. `fh.heads`) and the names
    of `NAMES` that moved out of it."""
    def __getattr__(name: str):
        if f"{package}.{name}" in MODULES:
            return importlib.import_module(f"{package}.{name}")
        new = NAMES.get((package, name))
        if new is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        _warn(f"{package}.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(new), name)
    return __getattr__
