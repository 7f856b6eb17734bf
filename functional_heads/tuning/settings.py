"""How a study searches and confirms: `TuneSettings`, whose defaults are also the defaults of the options of
`fheads tune`. Plain data, so the command line reads it without loading Optuna or the evaluation engine."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.errors import UserError

PRUNERS = ("halving", "hyperband", "none")  # successive halving, Hyperband, or every trial on every item


@dataclass(frozen=True)
class TuneSettings:
    """How a study searches and confirms; validated on construction."""

    trials: int = 200  # finished (complete or pruned) trials of the whole study, over all workers and resumes
    confirm_fraction: float = 0.5  # share of the dev split held out for confirmation
    min_effect: float = 0.05  # the smallest gain worth having (a share: 0.05 = 5 points; `--detect 5`): the
    # confirmation is sized to confirm it with `power` at `alpha` (`confirmation.plan`)
    alpha: float = 0.05
    power: float = 0.8
    pruner: str = "halving"
    min_items: int = 25  # the first rung
    reduction_factor: int = 2
    seed: int = 0
    heartbeat: int = 60  # seconds (RDB storages); a trial silent for twice this is taken as dead

    def __post_init__(self):
        checks = [(self.trials >= 1, "trials must be >= 1"),
                  (0 < self.confirm_fraction < 1, "confirm_fraction must be in (0, 1)"),
                  (0 < self.min_effect < 1, "min_effect must be a share in (0, 1), e.g. 0.05 for 5 points"),
                  (0 < self.alpha < 1 and 0 < self.power < 1, "alpha and power must be in (0, 1)"),
                  (self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}"),
                  (self.min_items >= 1 and self.reduction_factor >= 2, "min_items >= 1 and reduction_factor >= 2"),
                  (self.heartbeat >= 1, "heartbeat must be >= 1 second")]
        for ok, message in checks:
            if not ok:
                raise UserError(f"{message} (got {self}).")

    def rungs(self, n: int) -> list[int]:
        """Item counts at which a trial reports: min_items * reduction_factor**k below n, then n."""
        sizes, size = [], self.min_items
        while size < n:
            sizes.append(size)
            size *= self.reduction_factor
        return sizes + [n]
