"""Settings of the method, validated on construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..utils.errors import UserError
from ..utils.files import read_json

# Gains outside this range are almost surely a typo (the paper uses 1.16 and 1.30, `fheads tune` searches
# 0.6 to 1.6); `allow_extreme_gains` (--allow-extreme-gains) lifts it. Gains must be finite and > 0 always.
GAIN_RANGE = (0.1, 10.0)


def gain_error(value, allow_extreme: bool = False,
               opt_out: str = "allow_extreme_gains (--allow-extreme-gains)") -> str | None:
    """What is wrong with one gain, or None: the one rule for every gain (settings, files, flags, tensors)."""
    if not _number(value) or value <= 0 or (isinstance(value, float) and not math.isfinite(value)) \
            or value > 1e300:  # a huge JSON integer is no float either
        return "it must be a finite number > 0 (1 leaves a head as it is)"
    low, high = GAIN_RANGE
    if not allow_extreme and not low <= value <= high:
        return f"it must lie in [{low:g}, {high:g}] (1 leaves a head as it is); set {opt_out} to go outside that range"
    return None


@dataclass(frozen=True)
class RescaleConfig:
    """Functional head identification and class-conditioned rescaling (arXiv 2510.10285).

    Layers are counted from 0. A head (l, h) with visual attention ratio S_v at query position i* is a
    perception head if l <= perc_last_layer and S_v >= tau_perc, and a reasoning head if
    l >= reas_first_layer and S_v <= tau_reas. Their outputs are multiplied by g_perc and g_reas, or, with
    `layer_gains` (one gain per layer), a selected head of layer l by layer_gains[l] whatever its class.
    Gains are finite, > 0 and within GAIN_RANGE unless `allow_extreme_gains`.
    """

    perc_last_layer: int
    reas_first_layer: int
    tau_perc: float
    tau_reas: float
    g_perc: float = 1.0
    g_reas: float = 1.0
    query_offset: int = -1  # i*: -1 is the last prompt token, -2 the one before, ...
    include_video: bool = False  # count video tokens as visual tokens too
    per_token: bool = False  # divide S_v by the number of visual tokens (off in the paper)
    query_tokens: int = 1  # S_v averaged over this many prompt tokens ending at i* (the paper: i* alone)
    layer_gains: tuple[float, ...] | None = None  # per-layer gains of selected heads, instead of g_perc / g_reas
    allow_extreme_gains: bool = False  # gains outside GAIN_RANGE (still finite and > 0)

    def __post_init__(self):
        _check(self.perc_last_layer, "perc_last_layer", "an integer >= 0", lambda v: isinstance(v, int) and v >= 0)
        _check(self.reas_first_layer, "reas_first_layer", "an integer >= 0", lambda v: isinstance(v, int) and v >= 0)
        for name in ("tau_perc", "tau_reas"):
            _check(getattr(self, name), name, "a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1)
        if self.tau_reas >= self.tau_perc and self.reas_first_layer <= self.perc_last_layer:
            raise UserError(f"tau_reas={self.tau_reas} must be < tau_perc={self.tau_perc} where the bands overlap "
                            f"(layers {self.reas_first_layer}..{self.perc_last_layer}): a head cannot be both "
                            "image-heavy and text-heavy.")
        if not isinstance(self.allow_extreme_gains, bool):
            raise UserError(f"allow_extreme_gains={self.allow_extreme_gains!r} is invalid: it must be true or false.")
        for name in ("g_perc", "g_reas"):
            _check_gain(getattr(self, name), name, self.allow_extreme_gains)
        _check(self.query_offset, "query_offset", "an integer <= -1", lambda v: isinstance(v, int) and v <= -1)
        _check(self.query_tokens, "query_tokens", "an integer >= 1", lambda v: isinstance(v, int) and v >= 1)
        if self.layer_gains is not None:
            _check(self.layer_gains, "layer_gains", "a non-empty list of numbers, one per layer",
                   lambda v: isinstance(v, (list, tuple)) and len(v) > 0)
            object.__setattr__(self, "layer_gains", tuple(self.layer_gains))  # a JSON list reads back as a tuple
            for layer, gain in enumerate(self.layer_gains):
                _check_gain(gain, f"layer_gains[{layer}]", self.allow_extreme_gains)

    def check_layers(self, num_layers: int) -> None:
        """Raise if a layer bound lies outside a model of `num_layers` layers."""
        for name in ("perc_last_layer", "reas_first_layer"):
            if getattr(self, name) >= num_layers:
                raise UserError(f"{name}={getattr(self, name)} is outside the model: allowed range is "
                                f"0..{num_layers - 1} (layers are counted from 0).")
        if self.layer_gains is not None and len(self.layer_gains) != num_layers:
            raise UserError(f"layer_gains holds {len(self.layer_gains)} gains; the model has {num_layers} layers.")

    def inert_reason(self) -> str | None:
        """Why rescaling with these settings changes nothing (every gain is 1), or None."""
        if self.layer_gains is not None:
            return "its layer_gains are all 1" if all(g == 1 for g in self.layer_gains) else None
        if self.g_perc == 1 and self.g_reas == 1:
            return f"its gains are 1 (g_perc={self.g_perc:g}, g_reas={self.g_reas:g})"
        return None

    @classmethod
    def preset(cls, name: str, **overrides) -> "RescaleConfig":
        """The named settings of `PRESETS` (e.g. "ocean-r1", the paper's), with the given fields replaced."""
        if name not in PRESETS:
            raise UserError(f"Unknown preset '{name}'. Known presets: {', '.join(sorted(PRESETS))}.")
        return replace(PRESETS[name], **overrides)

    @classmethod
    def resolve(cls, preset: str | None = None, settings: str | Path | None = None, **overrides) -> "RescaleConfig":
        """Settings from a preset or a settings file (a RescaleConfig as JSON, a settings.json with a
        'config' entry, or a head map), with the given fields (those not None) on top; without either,
        the four identification fields must all be given."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise UserError(f"RescaleConfig has no field {', '.join(sorted(unknown))}.")
        if preset and settings:
            raise UserError("Give a preset or a settings file, not both.")
        if preset:
            return cls.preset(preset, **overrides)
        if settings:
            return replace(cls.from_file(settings), **overrides)  # the file's own values are checked first
        missing = {"perc_last_layer", "reas_first_layer", "tau_perc", "tau_reas"} - overrides.keys()
        if missing:
            flags = ", ".join("--" + m.replace("_", "-") for m in sorted(missing))
            raise UserError(f"Give --preset, --settings or all of: {flags}.")
        return cls(**overrides)

    @classmethod
    def from_file(cls, path: str | Path) -> "RescaleConfig":
        """Settings from a JSON file: a RescaleConfig, a settings.json with a 'config' entry, or a head map;
        whatever is wrong is one error naming the file."""
        try:
            data = read_json(path)
            return cls.from_dict(data.get("config", data))
        except (OSError, ValueError, AttributeError) as err:  # a UserError is a ValueError
            raise UserError(f"Cannot read settings from {path}: {err}") from err
        except TypeError as err:
            raise UserError(f"{path} does not hold RescaleConfig settings: {err}") from err

    def probe_options(self) -> dict:
        """The keyword arguments of `visual_attention_ratios` that this config sets."""
        return {"query_offset": self.query_offset, "include_video": self.include_video, "per_token": self.per_token,
                "query_tokens": self.query_tokens}

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.layer_gains is None:
            del data["layer_gains"]  # files and run identities without the field stay as they were
        if self.query_tokens == 1:
            del data["query_tokens"]
        if not self.allow_extreme_gains:
            del data["allow_extreme_gains"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RescaleConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TypeError(f"unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        return cls(**data)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_gain(value, name: str, allow_extreme: bool) -> None:
    problem = gain_error(value, allow_extreme)
    if problem:
        raise UserError(f"{name}={value!r} is invalid: {problem}.")


def _check(value, name: str, allowed: str, ok) -> None:
    if not ok(value):
        raise UserError(f"{name}={value!r} is invalid: it must be {allowed}.")


PRESETS = {
    # The paper's published Ocean-R1-7B settings (METHOD.md); it does not say whether layers count from 0.
    "ocean-r1": RescaleConfig(perc_last_layer=7, reas_first_layer=3, tau_perc=0.22, tau_reas=0.01,
                              g_perc=1.16, g_reas=1.30),
}
"""Named settings, for `RescaleConfig.preset(name)` and `--preset`."""
