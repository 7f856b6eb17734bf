"""Evaluation: benchmarks, scorers, methods, run folders and reports. Uses the method core; the core knows
nothing of it. `evaluate`, `report` and `tune` are the Python API of `fheads eval`, `fheads report` and
`fheads tune`."""

from .api import evaluate, report
from .methods import Generation, Method, get_method, register_method
from .run_folders import Decoding, Run
from .tuning import SearchSpace, TuneSettings, tune

__all__ = ["Decoding", "Generation", "Method", "Run", "SearchSpace", "TuneSettings", "evaluate", "get_method",
           "register_method", "report", "tune"]
