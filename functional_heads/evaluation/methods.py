"""The methods compared in evaluations, each one way to call `generate` on the same prompts.

vanilla; static (a calibrated head map); dynamic (per-input heads); perception-only and reasoning-only
(the static map with the other class's gain set to 1); the decoding baselines vcd, pai, agla and cgd, each
with its settings dataclass (published defaults). AGLA and CGD load their extra model (a BLIP image-text
matching model, a CLIP/SigLIP model) from the local folder their settings name.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from ..config import RescaleConfig
from ..dynamic import dynamic
from ..heads import HeadMap
from ..loading import prompt_inputs
from ..rescale import rescale
from .agla import AGLAConfig, ImageTextMatcher, agla_generate, augmented_views
from .baselines import PAIConfig, VCDConfig, pai_generate, vcd_generate
from .cgd import CGDConfig, ImageTextSimilarity, cgd_generate, terminal_token_ids

RESCALING = ("static", "dynamic", "perception-only", "reasoning-only")
BASELINES = {"vcd": VCDConfig, "pai": PAIConfig, "agla": AGLAConfig, "cgd": CGDConfig}
METHODS = ("vanilla", *RESCALING, *BASELINES)


def static_map(name: str, heads: HeadMap) -> HeadMap | None:
    """The head map a static method applies (None for vanilla); ablations set the other class's gain to 1."""
    gains = {"static": {}, "perception-only": {"g_reas": 1.0}, "reasoning-only": {"g_perc": 1.0}}
    if name not in gains:
        return None
    return HeadMap(heads.perception, heads.reasoning, replace(heads.config, **gains[name]), heads.model_type)


def method_context(name: str, model, heads: HeadMap | None, config: RescaleConfig | None):
    """What surrounds generate() for a rescaling method (nothing for the others)."""
    if name == "dynamic":
        return dynamic(model, config)
    static = static_map(name, heads) if heads is not None else None
    return nullcontext() if static is None else rescale(model, static)


@dataclass
class Method:
    """A method with everything it needs; `settings()` is what goes into a run's identity."""

    name: str
    heads: HeadMap | None = None
    config: RescaleConfig | None = None  # dynamic's thresholds and gains (default: the head map's)
    baseline: Any = None  # a decoding baseline's settings (VCDConfig, ...); default: the published ones
    _helper: Any = field(default=None, init=False, repr=False, compare=False)  # AGLA's / CGD's extra model
    _terminal_ids: Any = field(default=None, init=False, repr=False, compare=False)  # CGD's sentence ends

    def __post_init__(self):
        if self.name not in METHODS:
            raise ValueError(f"Unknown method '{self.name}': choose one of {', '.join(METHODS)}.")
        if self.name in RESCALING and self.name != "dynamic" and self.heads is None:
            raise ValueError(f"Method '{self.name}' needs a head map: pass --heads heads.json (from `fheads calibrate`).")
        if self.name == "dynamic" and self.config is None:
            if self.heads is None:
                raise ValueError("Method 'dynamic' needs settings: pass --heads heads.json or --preset.")
            self.config = self.heads.config
        if self.name in BASELINES:
            self.baseline = self.baseline if self.baseline is not None else BASELINES[self.name]()
            if not isinstance(self.baseline, BASELINES[self.name]):
                raise TypeError(f"Method '{self.name}' takes a {BASELINES[self.name].__name__}, "
                                f"got {type(self.baseline).__name__}.")
        elif self.baseline is not None:
            raise ValueError(f"Method '{self.name}' takes no baseline settings.")
        if self.name == "agla":
            self._helper = ImageTextMatcher(self.baseline.itm)
        if self.name == "cgd":
            self._helper = ImageTextSimilarity(self.baseline.clip)

    @classmethod
    def from_options(cls, name: str, options: dict[str, str], **kwargs) -> "Method":
        """A method whose baseline settings are given as text, e.g. {"alpha": "1.0"} (CLI and lmms-eval)."""
        if name not in BASELINES:
            if options:
                raise ValueError(f"Method options are for {', '.join(BASELINES)} only; '{name}' takes none.")
            return cls(name, **kwargs)
        types = {f.name: f.type for f in fields(BASELINES[name])}
        unknown = set(options) - set(types)
        if unknown:
            raise ValueError(f"{name} has no setting {', '.join(sorted(unknown))} (it has: {', '.join(types)}).")
        parse = {"int": int, "float": float, "str": str}
        try:
            values = {k: parse[getattr(types[k], "__name__", types[k])](v) for k, v in options.items()}
        except ValueError as err:
            raise ValueError(f"{name}: a setting has the wrong type ({err}).") from None
        return cls(name, baseline=BASELINES[name](**values), **kwargs)

    def settings(self) -> dict:
        settings = {"method": self.name}
        if self.name in RESCALING and self.name != "dynamic":
            settings["heads"] = static_map(self.name, self.heads).gains.flatten().tolist()
        if self.name == "dynamic":
            settings["config"] = self.config.to_dict()
        if self.name in BASELINES:
            settings[self.name] = asdict(self.baseline)
        return settings

    @torch.no_grad()
    def generate(self, model, processor, images, prompts, **generate_kwargs) -> tuple[torch.Tensor, int]:
        """Generated token ids for the prompts, and the prompt length they start after."""
        if self.name == "cgd":
            if self._terminal_ids is None:
                self._terminal_ids = terminal_token_ids(processor.tokenizer)
            return cgd_generate(model, processor, self._helper.to(model.device), images, prompts, self.baseline,
                                self._terminal_ids, **generate_kwargs), 0
        inputs = _on(model, prompt_inputs(processor, images, prompts))
        start = inputs["input_ids"].shape[1]
        if self.name == "vcd":
            return vcd_generate(model, inputs, self.baseline, **generate_kwargs), start
        if self.name == "pai":
            blind = _on(model, prompt_inputs(processor, None, prompts))
            return pai_generate(model, inputs, blind, self.baseline, **generate_kwargs), start
        if self.name == "agla":
            views = augmented_views(self._helper.to(model.device), images, prompts, self.baseline)
            augmented = _on(model, prompt_inputs(processor, views, prompts))
            return agla_generate(model, inputs, augmented, self.baseline, **generate_kwargs), start
        with method_context(self.name, model, self.heads, self.config):
            return model.generate(**inputs, **generate_kwargs), start


def _on(model, inputs: dict) -> dict:
    return {k: v.to(model.device) for k, v in inputs.items()}
