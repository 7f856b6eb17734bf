"""The search space of a study: the settings a trial draws (`SearchSpace.suggest`), from the model's layer
count and the study's calibrated S_v. A draw whose two thresholds cross is `Infeasible`: the trial is
pruned without an evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.config import RescaleConfig
from ..utils.errors import UserError

if TYPE_CHECKING:
    import torch


class Infeasible(ValueError):
    """A drawn setting that no head map can have (the two thresholds cross)."""


@dataclass(frozen=True)
class SearchSpace:
    """The settings a trial draws, derived from the model's layer count. Thresholds are drawn as the share
    of all heads each class selects (`thresholds_for_shares`); a share of 0, or a gain of 1, switches a class
    off, so perception-only, reasoning-only and vanilla are points of the space."""

    num_layers: int
    max_share: float = 0.1  # per class, of all heads; the paper found ~6% of heads best and 18% harmful
    share_step: float = 0.01
    gain_low: float = 1.0  # below 1 (damping) only when asked for
    gain_high: float = 1.6
    gain_step: float = 0.05
    per_layer_gains: bool = False  # one gain per layer instead of one per class
    query_tokens: int = 1  # S_v averaged over the last k prompt tokens (fixed per study)

    def __post_init__(self):
        if self.num_layers < 1:
            raise UserError(f"num_layers must be >= 1, got {self.num_layers}.")
        if not 0 < self.max_share <= 0.5 or not 0 < self.share_step <= self.max_share:
            raise UserError(f"max_share must be in (0, 0.5] and share_step in (0, max_share], got "
                            f"{self.max_share} and {self.share_step}.")
        if not 0 < self.gain_low <= 1 <= self.gain_high or self.gain_step <= 0:
            raise UserError(f"gains must span 1 (gain_low <= 1 <= gain_high, both > 0), got "
                            f"[{self.gain_low}, {self.gain_high}] step {self.gain_step}.")
        if self.query_tokens < 1:
            raise UserError(f"query_tokens must be >= 1, got {self.query_tokens}.")

    def suggest(self, trial, ratios: torch.Tensor) -> RescaleConfig:
        """The trial's settings, thresholds read off the calibrated S_v [layers, heads]."""
        from ..core.heads import thresholds_for_shares  # here: the defaults read without torch (`fheads --help`)

        last = self.num_layers - 1
        perc_last = trial.suggest_int("perc_last_layer", 0, last)
        reas_first = trial.suggest_int("reas_first_layer", 0, last)
        shares = [trial.suggest_float(f"{kind}_share", 0.0, self.max_share, step=self.share_step)
                  for kind in ("perc", "reas")]
        tau_perc, tau_reas = thresholds_for_shares(ratios, perc_last, reas_first, *shares)
        tau_perc, tau_reas = math.floor(tau_perc * 1e6) / 1e6, math.ceil(tau_reas * 1e6) / 1e6  # readable files
        if tau_reas >= tau_perc and reas_first <= perc_last:
            raise Infeasible(f"the reasoning threshold {tau_reas:.4f} is not below the perception one {tau_perc:.4f}")
        if self.per_layer_gains:
            gains = {"layer_gains": tuple(self._gain(trial, f"g_layer_{layer}") for layer in range(self.num_layers))}
        else:
            gains = {"g_perc": self._gain(trial, "g_perc"), "g_reas": self._gain(trial, "g_reas")}
            gains = {name: 1.0 if share == 0 else gain for (name, gain), share in zip(gains.items(), shares)}
        return RescaleConfig(perc_last, reas_first, tau_perc, tau_reas, **gains, query_tokens=self.query_tokens)

    def _gain(self, trial, name: str) -> float:
        return round(trial.suggest_float(name, self.gain_low, self.gain_high, step=self.gain_step), 6)
