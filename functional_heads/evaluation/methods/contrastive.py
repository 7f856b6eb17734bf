"""Training-free decoding baselines, through transformers' generation API: VCD and PAI.

Both contrast each step's logits with those of a second view of the same prompt: VCD a noised image,
PAI the prompt without its image (AGLA, in agla.py, an augmented image). `ContrastiveLogits` is a
`LogitsProcessor` that runs that second view beside `generate()` as a stream with its own KV cache, fed
the token the main stream chose at each step.
PAI also adds alpha*|a| to the image-token attention logits of the last query row in its layers, through
an attention function registered with transformers' AttentionInterface (no patching).
Defaults are the published ones (see METHOD.md).
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from transformers import LogitsProcessor

from ...core.attention import ScopedAttention, eager_attention_with, key_columns
from ...core.ratios import visual_token_mask
from ...models.architectures import locate
from ...models.compat import cache_argument, returned_cache
from ...utils.errors import UserError


@dataclass(frozen=True)
class VCDConfig:
    alpha: float = 1.0
    beta: float = 0.1
    noise_step: int = 500  # of 1000 diffusion steps
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.noise_step < 1000 or self.beta <= 0 or self.beta > 1 or self.alpha < 0:
            raise UserError(f"VCD needs 0 <= noise_step < 1000, 0 < beta <= 1 and alpha >= 0, got {self}.")


@dataclass(frozen=True)
class PAIConfig:
    alpha: float = 0.2
    gamma: float = 1.1
    beta: float = 0.1
    start_layer: int = 2
    end_layer: int = 32  # exclusive; clipped to the model's depth

    def __post_init__(self):
        if self.start_layer < 0 or self.end_layer <= self.start_layer or self.beta <= 0 or self.beta > 1:
            raise UserError(f"PAI needs 0 <= start_layer < end_layer and 0 < beta <= 1, got {self}.")


def diffusion_noise(pixel_values: torch.Tensor, step: int, seed: int = 0) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with VCD's schedule: 1000 betas from
    sigmoid(linspace(-6, 6)) scaled into [1e-5, 5e-3]. Elementwise, so any pixel layout works."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)[step].item()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32).to(pixel_values.device)
    return (math.sqrt(abar) * pixel_values.float() + math.sqrt(1 - abar) * noise).to(pixel_values.dtype)


def plausible(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """True where a token's probability is at least beta times the most likely token's."""
    return logits >= logits.max(-1, keepdim=True).values + math.log(beta)


def vcd_combine(logits: torch.Tensor, distorted: torch.Tensor, cfg: VCDConfig) -> torch.Tensor:
    combined = (1 + cfg.alpha) * logits - cfg.alpha * distorted
    return combined.masked_fill(~plausible(logits, cfg.beta), float("-inf"))


def pai_combine(logits: torch.Tensor, unconditional: torch.Tensor, cfg: PAIConfig) -> torch.Tensor:
    cond, uncond = logits.log_softmax(-1), unconditional.log_softmax(-1)
    combined = cfg.gamma * (cond - uncond) + uncond
    return combined.masked_fill(~plausible(logits, cfg.beta), float("-inf"))


class ContrastiveLogits(LogitsProcessor):
    """Replaces each step's scores by combine(scores, logits of the second view at the same step).

    The second view is a stream of its own with its own KV cache: its first call is a one-token greedy
    `generate()` over the second prompt (prefill), and each later call continues that cache with the token
    the main stream just chose, the way `generate()` continues a cached conversation. Greedy, so it draws
    nothing from the random state that the main stream samples from."""

    def __init__(self, model, second_inputs: dict, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 second_context: Callable[[], object] = nullcontext):
        self.model, self.second, self.combine, self.second_context = model, second_inputs, combine, second_context
        self.prompt_length: int | None = None
        self.cache = None
        # Qwen-VL models keep the last prompt's rope offsets on the model: each stream needs its own
        self.stateful = [m for m in model.modules() if hasattr(m, "rope_deltas")]
        self.second_offsets: list | None = None

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:  # the first call comes before any token is generated
            self.prompt_length = input_ids.shape[1]
        inputs = with_generated(self.second, input_ids[:, self.prompt_length:])
        if self.cache is not None:
            inputs = continuing(self.model, inputs, self.cache)
        main_offsets = [m.rope_deltas for m in self.stateful]
        if self.second_offsets is not None:
            for module, offsets in zip(self.stateful, self.second_offsets):
                module.rope_deltas = offsets
        try:
            with self.second_context():
                out = self.model.generate(**inputs, max_new_tokens=1, min_new_tokens=0, do_sample=False,
                                          use_cache=True, output_logits=True, return_dict_in_generate=True)
        finally:
            self.second_offsets = [m.rope_deltas for m in self.stateful]
            for module, offsets in zip(self.stateful, main_offsets):
                module.rope_deltas = offsets
        self.cache = returned_cache(out)
        other = out.logits[0]
        return self.combine(scores.float(), other.float().to(scores.device)).to(scores.dtype)


SEQUENCE_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def continuing(model, inputs: dict, cache) -> dict:
    """`model.generate()` inputs that continue `cache`: what runs along the sequence (the image is in the cache)."""
    return {**{k: v for k, v in inputs.items() if k in SEQUENCE_INPUTS}, cache_argument(model): cache}


def with_generated(inputs: dict, generated: torch.Tensor) -> dict:
    """The prompt inputs followed by the generated tokens (mask 1, token types 0)."""
    if generated.shape[1] == 0:
        return dict(inputs)
    ids = inputs["input_ids"]
    out = dict(inputs, input_ids=torch.cat([ids, generated.to(ids.device)], 1))
    for key, value in inputs.items():
        if key != "input_ids" and torch.is_tensor(value) and value.shape[:2] == ids.shape:
            fill = torch.ones_like if key == "attention_mask" else torch.zeros_like
            out[key] = torch.cat([value, fill(generated).to(value.dtype).to(value.device)], 1)
    return out


# ---------------------------------------------------------------- PAI's attention step

PAI_ATTENTION = "functional_heads_pai"


@dataclass
class PAIState:
    layers: range
    visual: torch.Tensor  # [batch, prompt_len] True at image tokens
    alpha: float
    paused: bool = False


def pai_attention_step(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    scope = PAI_SCOPE.current()
    state = scope.state
    layer = scope.layer(module)
    if state.paused or layer not in state.layers:
        return scope.kernel(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                    softcap=softcap, **kwargs)

    def boost_last_row(scores):
        visual = key_columns(state.visual.to(scores.device), scores.shape[-1])
        last = scores[:, :, -1, :]
        scores[:, :, -1, :] = torch.where(visual[:, None, :], last + state.alpha * last.abs(), last)
        return scores

    return eager_attention_with(boost_last_row, query, key, value, attention_mask, scaling, softcap)


PAI_SCOPE: ScopedAttention[PAIState] = ScopedAttention(PAI_ATTENTION, pai_attention_step, inside="`pai_attention`")


@contextmanager
def pai_attention(model, input_ids: torch.Tensor, cfg: PAIConfig) -> Iterator[PAIState]:
    """Within the block, layers [start_layer, end_layer) add alpha*|a| to the image-token attention logits of
    the last query row of every forward (the prompt's last token, then each new token)."""
    layout = locate(model)
    state = PAIState(layers=range(cfg.start_layer, min(cfg.end_layer, layout.num_layers)),
                      visual=visual_token_mask(input_ids, layout), alpha=cfg.alpha)
    with PAI_SCOPE.active(layout, state, base="eager"):
        yield state


@contextmanager
def _paused(state: PAIState):
    state.paused = True
    try:
        yield
    finally:
        state.paused = False


# ---------------------------------------------------------------- one call per method

def vcd_generate(model, inputs: dict, cfg: VCDConfig, **generate_kwargs) -> torch.Tensor:
    """generate() with visual contrastive decoding against the diffusion-noised image."""
    distorted = dict(inputs, pixel_values=diffusion_noise(inputs["pixel_values"], cfg.noise_step, cfg.seed))
    processor = ContrastiveLogits(model, distorted, lambda l, d: vcd_combine(l, d, cfg))
    return model.generate(**inputs, logits_processor=[processor], **generate_kwargs)


def pai_generate(model, inputs: dict, unconditional: dict, cfg: PAIConfig, **generate_kwargs) -> torch.Tensor:
    """generate() with PAI: image attention boosted, and guidance against `unconditional` (the same prompts
    made without their image)."""
    with ExitStack() as stack:
        state = stack.enter_context(pai_attention(model, inputs["input_ids"], cfg))
        processor = ContrastiveLogits(model, unconditional, lambda l, u: pai_combine(l, u, cfg),
                                      second_context=lambda: _paused(state))
        return model.generate(**inputs, logits_processor=[processor], **generate_kwargs)


__all__ = ["VCDConfig", "PAIConfig", "diffusion_noise", "vcd_combine", "pai_combine", "ContrastiveLogits",
           "pai_attention", "vcd_generate", "pai_generate", "with_generated", "continuing"]
