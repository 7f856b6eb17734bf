"""Evaluation: benchmarks, scorers, methods, run folders and reports. Uses the method core; the core knows
nothing of it. `evaluate` and `report` are the Python API of `fheads eval` and `fheads report`."""

from .api import evaluate, report
from .methods import Generation, Method, get_method, register_method
from .run_folders import Decoding, Run

__all__ = ["Decoding", "Generation", "Method", "Run", "evaluate", "get_method", "register_method", "report"]
