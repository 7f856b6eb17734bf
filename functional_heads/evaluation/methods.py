"""The methods compared in evaluations, each one way to call `generate` on the same prompts.

vanilla; static (a calibrated head map); dynamic (per-input heads); perception-only and reasoning-only
(the static map with the other class's gain set to 1); vcd and pai (decoding baselines). AGLA and CGD
need an extra model (BLIP image-text matching, SigLIP/CLIP) and are not implemented: asking for them
says so.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import torch

from ..config import RescaleConfig
from ..dynamic import dynamic
from ..heads import HeadMap
from ..loading import prompt_inputs
from ..rescale import rescale
from .baselines import PAIConfig, VCDConfig, pai_generate, vcd_generate

RESCALING = ("static", "dynamic", "perception-only", "reasoning-only")
METHODS = ("vanilla", *RESCALING, "vcd", "pai")
NOT_IMPLEMENTED = {
    "agla": "AGLA masks the image with GradCAM maps from a BLIP image-text matching model",
    "cgd": "CGD scores candidate sentences with a SigLIP/CLIP model",
}


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
    vcd: VCDConfig = VCDConfig()
    pai: PAIConfig = PAIConfig()

    def __post_init__(self):
        if self.name in NOT_IMPLEMENTED:
            raise ValueError(f"'{self.name}' is not implemented: {NOT_IMPLEMENTED[self.name]}, which this version "
                             f"does not load. Methods: {', '.join(METHODS)}.")
        if self.name not in METHODS:
            raise ValueError(f"Unknown method '{self.name}': choose one of {', '.join(METHODS)}.")
        if self.name in RESCALING and self.name != "dynamic" and self.heads is None:
            raise ValueError(f"Method '{self.name}' needs a head map: pass --heads heads.json (from `fheads calibrate`).")
        if self.name == "dynamic" and self.config is None:
            if self.heads is None:
                raise ValueError("Method 'dynamic' needs settings: pass --heads heads.json or --preset.")
            self.config = self.heads.config

    def settings(self) -> dict:
        settings = {"method": self.name}
        if self.name in RESCALING and self.name != "dynamic":
            settings["heads"] = static_map(self.name, self.heads).gains.flatten().tolist()
        if self.name == "dynamic":
            settings["config"] = self.config.to_dict()
        if self.name in ("vcd", "pai"):
            settings[self.name] = asdict(getattr(self, self.name))
        return settings

    @torch.no_grad()
    def generate(self, model, processor, images, prompts, **generate_kwargs) -> tuple[torch.Tensor, int]:
        """Generated token ids for the prompts, and the prompt length they start after."""
        inputs = {k: v.to(model.device) for k, v in prompt_inputs(processor, images, prompts).items()}
        if self.name == "vcd":
            return vcd_generate(model, inputs, self.vcd, **generate_kwargs), inputs["input_ids"].shape[1]
        if self.name == "pai":
            blind = {k: v.to(model.device) for k, v in prompt_inputs(processor, None, prompts).items()}
            return pai_generate(model, inputs, blind, self.pai, **generate_kwargs), inputs["input_ids"].shape[1]
        with method_context(self.name, model, self.heads, self.config):
            return model.generate(**inputs, **generate_kwargs), inputs["input_ids"].shape[1]
