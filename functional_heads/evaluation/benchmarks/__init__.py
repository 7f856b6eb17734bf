"""Benchmarks by name: one `Registry`, extended by installed packages through the entry-point group
`functional_heads.benchmarks`. Adding one is a `Benchmark` subclass with a `name`, decorated with
`@register_benchmark` (or declared under that group); `fheads eval`, `fheads tune` and `fheads report` then
find it by name."""

from __future__ import annotations

from ...utils.registry import Registry
from .base import Benchmark, Example, Scored, Unusable, open_image, read_rows
from .chair import CHAIR
from .hallusionbench import HallusionBench
from .mathvision import MathVision
from .mathvista import MathVista
from .mmstar import MMStar
from .pope import POPE
from .seedbench import SEEDBench
from .shapes import Shapes

ENTRY_POINT_GROUP = "functional_heads.benchmarks"
BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", Benchmark, ENTRY_POINT_GROUP)
for _builtin in (MathVista, MathVision, HallusionBench, MMStar, SEEDBench, POPE, CHAIR, Shapes):
    BENCHMARKS.register(_builtin)


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Add a benchmark to the registry under its `name` (a class decorator)."""
    return BENCHMARKS.register(cls)


def benchmark_names() -> list[str]:
    return BENCHMARKS.names()


def get_benchmark(name: str, **options: str) -> Benchmark:
    """The registered benchmark `name`, made with its options (text, e.g. annotations=PATH for chair)."""
    return BENCHMARKS.get(name)(**options)


__all__ = ["BENCHMARKS", "ENTRY_POINT_GROUP", "Benchmark", "Example", "Scored", "Unusable", "benchmark_names",
           "get_benchmark", "open_image", "read_rows", "register_benchmark"]
