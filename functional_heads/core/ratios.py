"""Visual attention ratios S_v(l, h): how much of head h's attention in layer l, at query position i*,
falls on the image tokens.

The model runs with its usual attention kernel; a thin attention function registered with transformers'
`AttentionInterface` wraps that kernel and, beside it, computes only the attention row of i* (one row per
head, never the full matrix). Its `AttentionMaskInterface` entry hands out the wrapped kernel's own masks,
so causal, padding and sliding-window masks reach the row exactly as they reach the kernel.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..models.architectures import ModelLayout, locate
from ..models.compat import attention_implementation
from ..utils.errors import UserError
from .attention import ScopedAttention

PROBE = "functional_heads_probe"
_WRAPPABLE = ("sdpa", "eager")  # others (flash, flex) are probed through sdpa: same outputs, known masks


@dataclass
class Probe:
    """What the probe attention function needs for one forward pass over a batch of prompts."""

    query_index: torch.Tensor  # [batch, k]: i* and the k-1 prompt tokens before it, S_v is their mean
    visual: torch.Tensor  # [batch, seq] True at visual tokens
    per_token: bool
    per_position: bool  # report S_v of each query position ([batch, k, heads]) instead of their mean
    on_layer: Callable[[int, torch.Tensor], None]  # receives (layer, S_v [batch, heads] float32)


def _probe_attention(module, query, key, value, attention_mask, **kwargs):
    scope = _probe_scope.current()
    probe = scope.state
    output = scope.kernel(module)(module, query, key, value, attention_mask, **kwargs)
    layer = scope.layer(module)
    if layer is not None and query.shape[2] == probe.visual.shape[1]:  # the prompt's prefill, not a decode step
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        rows = [query_row_attention(query, key, attention_mask, column, scaling, kwargs.get("softcap"),
                                    kwargs.get("s_aux")) for column in probe.query_index.unbind(1)]
        visual = probe.visual.to(device=rows[0].device, dtype=rows[0].dtype)  # layers may sit on other devices
        ratios = torch.stack([(row * visual[:, None, :]).sum(-1) for row in rows])  # [k, batch, heads]
        if probe.per_token:
            ratios = ratios / visual.sum(-1, keepdim=True)
        ratios = ratios.transpose(0, 1) if probe.per_position else ratios.mean(0)
        probe.on_layer(layer, ratios)
    return output


_probe_scope: ScopedAttention[Probe] = ScopedAttention(PROBE, _probe_attention, inside="functional_heads probes")


def query_row_attention(query, key, attention_mask, rows, scaling, softcap=None, sinks=None) -> torch.Tensor:
    """Post-softmax attention of query position rows[b] over all keys: float32 [batch, heads, keys].

    query [batch, heads, q_len, dim]; key [batch, kv_heads, kv_len, dim] (grouped-query keys are shared by
    consecutive heads, as `repeat_kv` does); attention_mask as the wrapped kernel receives it; sinks [heads]
    (the `s_aux` of models with attention sinks: one more logit per head, in the softmax but not a key).
    """
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    q = query[torch.arange(batch, device=query.device), :, rows.to(query.device)].float()  # [b, heads, dim]
    q = q.view(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.einsum("bkgd,bkjd->bkgj", q, key.float()).reshape(batch, heads, kv_len) * scaling
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + _mask_row(attention_mask, rows, batch, q_len, kv_len, scores.device)
    if sinks is not None:
        sink = sinks.float().to(scores.device).reshape(1, heads, 1).expand(batch, heads, 1)
        return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    return torch.softmax(scores, dim=-1)


def _mask_row(mask, rows, batch, q_len, kv_len, device) -> torch.Tensor:
    """Additive float32 mask [batch, 1 or heads, kv_len] of row `rows[b]` of the kernel's mask."""
    rows = rows.to(device)
    if mask is None:  # the kernel was told to be causal: keys up to the query's own position
        keys = torch.arange(kv_len, device=device)
        allowed = keys[None, :] <= (rows[:, None] + kv_len - q_len)
        return torch.where(allowed, 0.0, float("-inf"))[:, None, :]
    if mask.dim() != 4:
        raise RuntimeError(f"Unexpected attention mask of shape {tuple(mask.shape)} for the probe.")
    mask = mask.expand(batch, -1, -1, -1)[torch.arange(batch, device=device), :, rows, :kv_len]
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, float("-inf"))
    return mask.float()


def query_positions(attention_mask: torch.Tensor | None, input_ids: torch.Tensor, offset: int = -1) -> torch.Tensor:
    """Index of i* in each row: `offset` counted from the end of the non-padding tokens (-1 is the last)."""
    real = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool()
    last = input_ids.shape[1] - 1 - real.flip(-1).int().argmax(-1)  # last real token, left or right padded
    index = last + 1 + offset
    valid = real.any(-1) & (index >= 0) & real.gather(1, index.clamp(min=0)[:, None]).squeeze(1)
    if not valid.all():
        raise UserError(f"query_offset={offset} points before the start or into the padding of prompt(s) "
                        f"{(~valid).nonzero().flatten().tolist()}; use an offset within every prompt.")
    return index


def query_window(attention_mask: torch.Tensor | None, input_ids: torch.Tensor, offset: int = -1,
                 tokens: int = 1) -> torch.Tensor:
    """[batch, tokens] positions: the `tokens` prompt tokens ending at i* (offset `offset` from the end)."""
    return torch.stack([query_positions(attention_mask, input_ids, offset - back) for back in range(tokens)], 1)


def visual_token_mask(input_ids: torch.Tensor, layout: ModelLayout, include_video: bool = False) -> torch.Tensor:
    ids = [layout.image_token_id] + ([layout.video_token_id] if include_video and layout.video_token_id else [])
    visual = torch.isin(input_ids, torch.tensor(ids, device=input_ids.device))
    missing = (~visual.any(-1)).nonzero().flatten().tolist()
    if missing:
        raise UserError(f"Prompt(s) {missing} of the batch hold no visual token (token ids {ids}). Pass inputs made "
                        "by the model's processor with an image, whose image placeholder is expanded into tokens.")
    return visual


def wrappable_base(layout: ModelLayout) -> str:
    current = attention_implementation(layout.text_configs[0])
    return current if current in _WRAPPABLE else "sdpa"


@contextmanager
def probing(model, input_ids, attention_mask, on_layer, *, query_offset: int = -1, include_video: bool = False,
            per_token: bool = False, query_tokens: int = 1, layout: ModelLayout | None = None,
            positions: torch.Tensor | None = None) -> Iterator[Probe]:
    """Within the block, every prefill of these prompts reports S_v per layer to `on_layer(layer, ratios)`:
    [batch, heads] at i*, or [batch, k, heads] at each of `positions` [batch, k] (absolute indices) if given."""
    layout = layout or locate(model)
    index = query_window(attention_mask, input_ids, query_offset, query_tokens) if positions is None else positions
    probe = Probe(query_index=index, visual=visual_token_mask(input_ids, layout, include_video), per_token=per_token,
                  per_position=positions is not None, on_layer=on_layer)
    with _probe_scope.active(layout, probe, base=wrappable_base(layout)):
        yield probe


@torch.no_grad()
def visual_attention_ratios(model, inputs: dict, *, query_offset: int = -1, include_video: bool = False,
                            per_token: bool = False, query_tokens: int = 1,
                            positions: torch.Tensor | None = None) -> torch.Tensor:
    """S_v for every layer and head at i* of each prompt: float32 [batch, layers, heads].

    `inputs` is what the model's processor returns. i* is the last prompt token by default (query_offset=-1);
    visual tokens are the image tokens (and video tokens with include_video); per_token divides S_v by the
    number of visual tokens (the paper uses raw sums); query_tokens > 1 averages S_v over that many prompt
    tokens ending at i*. `RescaleConfig.probe_options()` gives these. With `positions` [batch, k] (absolute
    token indices, e.g. points along a chain of thought fed back with the prompt), S_v at each of them:
    [batch, k, layers, heads].
    """
    layout = locate(model)
    batch = inputs["input_ids"].shape[0]
    shape = (batch, layout.num_layers, layout.num_heads) if positions is None else \
        (batch, positions.shape[1], layout.num_layers, layout.num_heads)
    ratios = torch.full(shape, float("nan"))
    recorded = set()

    def record(layer, values):
        ratios[..., layer, :] = values.float().cpu()
        recorded.add(layer)

    with probing(model, inputs["input_ids"], inputs.get("attention_mask"), record, query_offset=query_offset,
                 include_video=include_video, per_token=per_token, query_tokens=query_tokens, layout=layout,
                 positions=positions):
        model(**inputs, use_cache=False, logits_to_keep=1)
    missing = sorted(set(range(layout.num_layers)) - recorded)
    if missing:
        raise RuntimeError(f"No attention was recorded for layers {missing}: this model's attention does not go "
                           "through transformers' AttentionInterface (remote code?), so ratios cannot be probed.")
    if not ratios.isfinite().all():  # recorded, but the attention itself is NaN or infinite
        layers = sorted(set((~ratios.isfinite()).reshape(-1, layout.num_layers, layout.num_heads).any(-1).any(0)
                            .nonzero().flatten().tolist()))
        raise UserError(f"The model's attention is NaN or infinite in layers {layers} (S_v cannot be measured): "
                        "its weights or inputs hold non-finite values, or its dtype overflows (float16: try "
                        "--dtype bfloat16 or float32).")
    return ratios

