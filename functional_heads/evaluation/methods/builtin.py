"""The built-in methods: vanilla; static (a calibrated head map); perception-only and reasoning-only (the
static map with the other class's heads left out); dynamic (per-input heads); the decoding baselines vcd,
pai, agla and cgd with their published defaults. AGLA and CGD load their extra model from the local folder
their settings name when the method is made, so a wrong path fails before the VLM loads.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...core.dynamic import dynamic
from ...core.rescale import rescale
from ...models.loading import prompt_inputs, to_model_device
from ...utils.errors import UserError
from .agla import AGLAConfig, ImageTextMatcher, agla_generate, augmented_views
from .cgd import CGDConfig, ImageTextSimilarity, cgd_generate, terminal_token_ids
from .contrastive import PAIConfig, VCDConfig, pai_generate, vcd_generate
from .registry import Generation, Method, register_method


@register_method
class Vanilla(Method):
    name = "vanilla"


@register_method
class Static(Method):
    """The calibrated head map's gains, as hooks on o_proj."""

    name = "static"
    rescales = True
    keep: ClassVar[str | None] = None  # the ablations keep only "perception" or "reasoning" heads

    def setup(self):
        super().setup()
        if self.heads is None:
            raise UserError(f"Method '{self.name}' needs a head map: pass --heads heads.json "
                            "(from `fheads calibrate`).")
        self.static = self.heads.only(self.keep) if self.keep else self.heads

    def identity(self) -> dict:
        return {**super().identity(), "heads": self.static.gains.flatten().tolist()}

    def inert_warning(self):
        return self.static.inert_warning(f"method {self.name}'s head map")

    def static_gains(self) -> torch.Tensor:
        return self.static.gains

    def context(self, model):
        return rescale(model, self.static)

    def heads_rescaled(self, handle, batch):
        return [(self.static.gains != 1).float().mean().item()] * batch


@register_method
class Dynamic(Method):
    """Per-input heads from each prompt's own S_v (settings: `config`, or the head map's)."""

    name = "dynamic"
    rescales = True
    needs_image = True  # no image tokens, no S_v to pick heads from: such prompts are not rescaled

    def setup(self):
        super().setup()
        if self.config is None:
            if self.heads is None:
                raise UserError("Method 'dynamic' needs settings: pass --heads heads.json or --preset.")
            self.config = self.heads.config

    def identity(self) -> dict:
        return {**super().identity(), "config": self.config.to_dict()}

    def inert_warning(self):
        reason = self.config.inert_reason()
        return None if reason is None else f"method dynamic's settings change nothing: {reason}, so its runs equal " \
            "vanilla."

    def context(self, model):
        return dynamic(model, self.config)

    def heads_rescaled(self, handle, batch):
        return (handle.heads.gains != 1).float().flatten(1).mean(1).tolist()


@register_method
class PerceptionOnly(Static):
    name = "perception-only"
    keep = "perception"


@register_method
class ReasoningOnly(Static):
    name = "reasoning-only"
    keep = "reasoning"


@register_method
class VCD(Method):
    name = "vcd"
    settings_class = VCDConfig
    needs_image = True

    def decode(self, model, processor, inputs, images, prompts, **generate_kwargs):
        return vcd_generate(model, inputs, self.settings, **generate_kwargs)


class SecondViewContrast(Method):
    """A decoding baseline that contrasts every step with the same prompts over other images (or none)."""

    contrast: ClassVar  # (model, inputs, second_inputs, settings, **generate_kwargs) -> token ids
    needs_image = True

    def second_images(self, model, images, prompts):
        raise NotImplementedError

    def decode(self, model, processor, inputs, images, prompts, **generate_kwargs):
        second = to_model_device(prompt_inputs(processor, self.second_images(model, images, prompts), prompts), model)
        return type(self).contrast(model, inputs, second, self.settings, **generate_kwargs)


@register_method
class PAI(SecondViewContrast):
    """Image attention boosted, guided against the prompts without their image."""

    name = "pai"
    settings_class = PAIConfig
    contrast = pai_generate

    def second_images(self, model, images, prompts):
        return None


@register_method
class AGLA(SecondViewContrast):
    """Contrasted with the images whose regions irrelevant to the prompt are blacked out."""

    name = "agla"
    settings_class = AGLAConfig
    extra_model = ("itm", ImageTextMatcher)
    contrast = agla_generate

    def second_images(self, model, images, prompts):
        return augmented_views(self.extra.to(model.device), images, prompts, self.settings)


@register_method
class CGD(Method):
    """Sentence-level search of its own: always samples with its settings, seeded per item."""

    name = "cgd"
    settings_class = CGDConfig
    needs_image = True
    one_row_per_prompt = False
    extra_model = ("clip", ImageTextSimilarity)

    @torch.no_grad()
    def generate(self, model, processor, images, prompts, **generate_kwargs) -> Generation:
        if images is None:  # nothing for the image-text scorer to compare with
            return super().generate(model, processor, images, prompts, **generate_kwargs)
        if getattr(self, "_terminals", (None,))[0] is not processor.tokenizer:  # once per tokenizer
            self._terminals = (processor.tokenizer, terminal_token_ids(processor.tokenizer))
        tokens = cgd_generate(model, processor, self.extra.to(model.device), images, prompts, self.settings,
                              self._terminals[1], **generate_kwargs)
        return Generation(tokens, 0, [0.0] * len(prompts))
