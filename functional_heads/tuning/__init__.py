"""Tuning: the method's settings chosen by an Optuna study on a dev split and confirmed on held-out items
(`fheads tune`). Built on evaluation's answering engine."""

from .study import SearchSpace, TuneSettings, tune

__all__ = ["SearchSpace", "TuneSettings", "tune"]
