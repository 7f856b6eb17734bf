"""Evaluation: benchmarks, methods, the answering engine, run folders, reports and statistics. Uses the
method core; the core knows nothing of it. `evaluate`, `report` and `verify` are the Python API of `fheads
eval`, `fheads report` and `fheads verify` (`verify_heads`: the same on a loaded model; `fheads tune` is
`functional_heads.tuning.tune`).

The names below are imported when first used (`utils.lazy`), so a light submodule (the benchmarks' names,
the shapes generator) can be imported without the answering engine, torch or transformers."""

from ..utils import lazy
from ..utils.moved import forward_names

_EXPORTS = {"evaluate": ".api", "report": ".api", "Decoding": ".engine", "Generation": ".methods",
            "Method": ".methods", "get_method": ".methods", "register_method": ".methods", "Run": ".runs",
            "verify": ".verify", "verify_heads": ".verify"}
# then the names that moved to other packages (tune: functional_heads.tuning), and submodules
__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS, forward_names(__name__))

__all__ = sorted(_EXPORTS)
