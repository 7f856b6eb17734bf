"""Evaluation: benchmarks, methods, the answering engine, run folders, reports and statistics. Uses the
method core; the core knows nothing of it. `evaluate`, `report` and `verify` are the Python API of `fheads
eval`, `fheads report` and `fheads verify` (`verify_heads`: the same on a loaded model; `fheads tune` is
`functional_heads.tuning.tune`)."""

from ..utils.moved import forward_names
from .api import evaluate, report
from .engine import Decoding
from .methods import Generation, Method, get_method, register_method
from .runs import Run
from .verify import verify, verify_heads

__getattr__ = forward_names(__name__)  # names that moved to other packages (tune: functional_heads.tuning)

__all__ = ["Decoding", "Generation", "Method", "Run", "evaluate", "get_method", "register_method", "report", "verify",
           "verify_heads"]
