"""An additive bias on the attention logits of the image keys, one per head: the most direct way to give a
head back the attention to the image that it lost, without touching what it reads or writes.

`image_key_bias(model, input_ids, bias)` makes every query row of the text decoder's heads (the prompt and
each generated token) add `bias[layer, head]` to its logits at the image tokens of `input_ids`, within the
block; layers without bias run their usual kernel. With `record=True` it also keeps S_v at i* (the prompt's
last token) of every head under the bias, from the prompt's forward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ..models.architectures import locate
from ..utils.errors import UserError
from .attention import ScopedAttention, eager_attention_with, key_columns
from .ratios import query_positions, visual_token_mask

IMAGE_KEY_BIAS = "functional_heads_image_key_bias"


@dataclass
class ImageKeyBias:
    bias: torch.Tensor  # [layers, heads], added to the logits at image keys
    visual: torch.Tensor  # [batch, prompt_len] True at image tokens
    rows: torch.Tensor  # [batch] i*, the prompt's last token
    record: bool = False
    sv: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> S_v at i* [batch, heads], when recording

    def sv_at_i_star(self) -> torch.Tensor:
        """[batch, layers, heads] S_v at i* recorded in the prompt's forward pass."""
        if len(self.sv) != self.bias.shape[0]:
            raise RuntimeError("No prompt forward pass was recorded: run the model inside the block with record=True.")
        return torch.stack([self.sv[layer] for layer in range(self.bias.shape[0])], 1)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    scope = _scope.current()
    state, layer = scope.state, scope.layer(module)
    prompt_pass = query.shape[2] == state.visual.shape[1]
    if layer is None or not (bool(state.bias[layer].any()) or (state.record and prompt_pass)):
        return scope.kernel(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                    softcap=softcap, **kwargs)
    bias = state.bias[layer].to(query.device)

    def add_bias(scores):
        visual = key_columns(state.visual.to(scores.device), scores.shape[-1])
        return scores + bias[None, :, None, None] * visual[:, None, None, :]

    output, weights = eager_attention_with(add_bias, query, key, value, attention_mask, scaling, softcap)
    if state.record and prompt_pass:
        rows = state.rows.to(weights.device)
        at_i_star = weights[torch.arange(len(rows), device=weights.device), :, rows].float()  # [batch, heads, keys]
        state.sv[layer] = (at_i_star * state.visual.to(weights.device)[:, None, :]).sum(-1).cpu()
    return output, weights


_scope: ScopedAttention[ImageKeyBias] = ScopedAttention(IMAGE_KEY_BIAS, _attention, inside="`image_key_bias`")


@contextmanager
def image_key_bias(model, input_ids: torch.Tensor, bias: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                   record: bool = False) -> Iterator[ImageKeyBias]:
    """Within the block, head (l, h) of the text decoder adds `bias[l, h]` to its attention logits at the image
    tokens of `input_ids` (the prompts the model is about to run, with their `attention_mask`), in every query
    row; with `record`, the prompt's forward pass keeps S_v at i* of every head (`sv_at_i_star()`)."""
    layout = locate(model)
    bias = torch.as_tensor(bias, dtype=torch.float32)
    if tuple(bias.shape) != (layout.num_layers, layout.num_heads):
        raise UserError(f"The image-key bias must be [layers, heads] = [{layout.num_layers}, {layout.num_heads}], "
                        f"got {list(bias.shape)}.")
    if not torch.isfinite(bias).all():
        raise UserError("The image-key bias holds a non-finite value; give finite logit offsets.")
    state = ImageKeyBias(bias, visual_token_mask(input_ids, layout), query_positions(attention_mask, input_ids), record)
    with _scope.active(layout, state, base="eager"):
        yield state


@torch.no_grad()
def mean_sv_under_bias(model, batches: Sequence[dict], bias: torch.Tensor) -> torch.Tensor:
    """[layers, heads] mean S_v at i* over the prompts of `batches` (model inputs) under `bias`."""
    total, count = None, 0
    for inputs in batches:
        with image_key_bias(model, inputs["input_ids"], bias, attention_mask=inputs.get("attention_mask"),
                            record=True) as state:
            model(**inputs)
        sv = state.sv_at_i_star()
        total = sv.sum(0) if total is None else total + sv.sum(0)
        count += len(sv)
    return total / count


def bias_matching(model, batches: Sequence[dict], target: torch.Tensor, chosen: torch.Tensor, *,
                  span: float = 16.0, steps: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-key biases for the `chosen` heads ([layers, heads] bool) that bring each one's mean S_v at i* over
    `batches` to `target[layer, head]`: (bias, the mean S_v reached). All chosen heads are bisected together
    within [-span, span] logits, each on its own S_v; a head's bias also changes what later layers read, so
    the reached S_v is measured again at the end rather than assumed."""
    layout = locate(model)
    chosen = chosen.bool()
    low = torch.full((layout.num_layers, layout.num_heads), -span)
    high = torch.full((layout.num_layers, layout.num_heads), span)
    for _ in range(steps):
        bias = torch.where(chosen, (low + high) / 2, 0.0)
        below = mean_sv_under_bias(model, batches, bias) < target
        low = torch.where(chosen & below, bias, low)
        high = torch.where(chosen & ~below, bias, high)
    bias = torch.where(chosen, (low + high) / 2, 0.0)
    return bias, mean_sv_under_bias(model, batches, bias)
