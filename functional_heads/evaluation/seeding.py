"""Seeded sampling that leaves the caller's random state alone."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


def text_seed(text: str) -> int:
    """A stable 48-bit seed from a text (e.g. a run's seed and an item id)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16)


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Within the block torch's global generators (CPU, and `device`'s if it is a GPU) start from `seed`;
    on exit they are back where they were. `generate()` samples from the global generator and takes no
    `torch.Generator`, so a scoped fork is how a seeded draw stays out of the caller's process."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
