"""Per-input identification: each prompt's own S_v at i* picks its heads, whose gains then hold for the
whole generation of that prompt.

Two modes:
- "two-pass" (default, the reference): at each prefill, probe the unmodified model on the prompt, pick the
  heads, then run the prefill and every decoding step with those gains. Costs one extra prefill.
- "single-pass": one prefill; layer l's heads are picked from layer l's attention row inside that same
  prefill, just before its o_proj. Layers above see the already rescaled residual stream, so heads can
  differ from two-pass; the cost is only the probe's row.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn

from ..models.architectures import locate
from ..models.compat import CACHE_KEYS, passed_cache
from ..utils.errors import UserError
from .config import RescaleConfig
from .heads import HeadMap, classify, identify_heads
from .ratios import probing, visual_attention_ratios
from .rescale import HeadScaler, warn_if_folded_checkpoint

MODES = ("two-pass", "single-pass")
_CACHE_KEYS = (*CACHE_KEYS, "use_cache", "cache_position", "logits_to_keep", "return_dict")


@dataclass
class DynamicRun:
    """Handle yielded by `dynamic`: `heads` is the per-input HeadMap of the latest prompt batch."""

    config: RescaleConfig
    mode: str
    heads: HeadMap | None = None
    _probe: ExitStack = field(default_factory=ExitStack, repr=False)
    _busy: bool = False


def _is_prefill(kwargs: dict) -> bool:
    cache = passed_cache(kwargs)
    return cache is None or not hasattr(cache, "get_seq_length") or cache.get_seq_length() == 0


@contextmanager
def dynamic(model: nn.Module, config: RescaleConfig, mode: str = "two-pass") -> Iterator[DynamicRun]:
    """Within the block, every forward that starts a prompt (a plain call or generate()'s prefill) picks
    per-input heads from that prompt and rescales them until the next prompt."""
    if mode not in MODES:
        raise UserError(f"mode={mode!r} is invalid: it must be one of {MODES}.")
    warn_if_folded_checkpoint(model)
    layout = locate(model)
    config.check_layers(layout.num_layers)
    run = DynamicRun(config, mode)
    scaler = HeadScaler(model, layout=layout)

    def probe_then_rescale(inputs: dict) -> None:  # two-pass: measure the unmodified model first
        scaler.set_gains(None)
        run._busy = True
        try:
            ratios = visual_attention_ratios(model, {k: v for k, v in inputs.items() if k not in _CACHE_KEYS},
                                             **config.probe_options())
        finally:
            run._busy = False
        run.heads = identify_heads(ratios, config, layout.model_type)
        scaler.set_gains(run.heads)

    def pick_inside_prefill(inputs: dict) -> None:  # single-pass: each layer picks just before its o_proj
        shape = (inputs["input_ids"].shape[0], layout.num_layers, layout.num_heads)
        run.heads = HeadMap(torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool), config,
                            layout.model_type, torch.zeros(shape))
        scaler.set_gains(torch.ones(shape))

        def pick(layer, ratios):
            ratios = ratios.float().cpu()
            run.heads.perception[:, layer], run.heads.reasoning[:, layer] = classify(ratios, layer, config)
            run.heads.ratios[:, layer] = ratios
            scaler.set_layer_gains(layer, run.heads.gains[:, layer])

        run._probe.enter_context(probing(model, inputs["input_ids"], inputs.get("attention_mask"), pick,
                                         layout=layout, **config.probe_options()))

    def before_forward(module, args, kwargs):
        if run._busy or not _is_prefill(kwargs):
            return None
        inputs = {"input_ids": args[0] if args else kwargs.get("input_ids"), **kwargs}
        if inputs["input_ids"] is None:
            raise UserError("dynamic() needs input_ids (not inputs_embeds) to find the image tokens of each prompt.")
        run._probe.close()
        (probe_then_rescale if mode == "two-pass" else pick_inside_prefill)(inputs)
        return None

    def after_forward(module, args, kwargs, output):
        run._probe.close()  # single-pass: the probe lives for one prefill only

    handles = [model.register_forward_pre_hook(before_forward, with_kwargs=True),
               model.register_forward_hook(after_forward, with_kwargs=True)]
    try:
        yield run
    finally:
        run._probe.close()
        for handle in handles:
            handle.remove()
        scaler.remove()
