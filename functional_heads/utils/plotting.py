"""One matplotlib set-up for every figure the project draws (the `plot` extra); the figures live with
what they show (`evaluation.figures`, `tuning.figures`).

`available()` says whether matplotlib is installed, so a command can check before its work and skip its
figures with a note instead of failing at the end.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .imports import install_hint, is_matplotlib_available

MISSING = f"figures skipped: matplotlib is not installed ({install_hint('matplotlib')})"


def available() -> bool:
    return is_matplotlib_available()


@contextmanager
def figure(path: Path, size: tuple[float, float]) -> Iterator:
    """Yields (fig, ax) and saves the figure to `path` on exit (Agg backend: no display needed), cropped to
    everything drawn: a legend or label outside the axes is kept whole."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield fig, ax
        fig.tight_layout()
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
