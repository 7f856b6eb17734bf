"""Benchmarks by name. Adding one is one module with a `Benchmark` subclass and one line here."""

from __future__ import annotations

from ...utils.errors import UserError
from .base import Benchmark, Example, Scored, Unusable, open_image, read_rows
from .chair import CHAIR
from .hallusionbench import HallusionBench
from .mathvision import MathVision
from .mathvista import MathVista
from .mmstar import MMStar
from .pope import POPE
from .seedbench import SEEDBench
from .shapes import Shapes

BENCHMARKS: dict[str, type[Benchmark]] = {b.name: b for b in (
    MathVista, MathVision, HallusionBench, MMStar, SEEDBench, POPE, CHAIR, Shapes)}


def get_benchmark(name: str, **options: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"Unknown benchmark '{name}': choose one of {', '.join(BENCHMARKS)}.")
    return BENCHMARKS[name](**options)


__all__ = ["BENCHMARKS", "Benchmark", "Example", "Scored", "Unusable", "get_benchmark", "open_image", "read_rows"]
