"""Class-conditioned rescaling: multiply each head's output O_h by its gain before the output projection.

`rescale` does it with forward pre-hooks on every layer's o_proj (static [layers, heads] or per-input
[batch, layers, heads] gains) and always removes them; `fold` bakes static gains into the o_proj weight
columns (same outputs, zero cost) and `unfold` restores the original columns exactly. `masked` silences
heads through the same hooks (gain 0): masking is an ablation, not rescaling, so its zero gains are made
here (`mask_gains`) and never pass the check that rescaling gains are > 0.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from ..models.architectures import ModelLayout, locate
from ..utils.errors import FunctionalHeadsWarning, UserError
from .config import GAIN_RANGE, gain_error
from .heads import FOLDED_KEY, HeadMap, describe_folded

_FOLD_ATTR = "_functional_heads_fold"
_WARNED_FOLDED = "_functional_heads_warned_folded"


def gains_for(heads: HeadMap | torch.Tensor, layout: ModelLayout, allow_extreme_gains: bool = False) -> torch.Tensor:
    """Gains of a head map or a raw tensor, checked against the model: [layers, heads] or [batch, layers, heads].
    A raw tensor's gains follow the rule of RescaleConfig's (`config.gain_error`): finite, > 0, and within
    GAIN_RANGE unless `allow_extreme_gains`; a head map's were checked when its settings were made."""
    if isinstance(heads, HeadMap):
        heads.check_fits(layout)
        return heads.gains
    gains = _shaped(torch.as_tensor(heads, dtype=torch.float32), layout, "gains")
    low, high = GAIN_RANGE
    bad = ~torch.isfinite(gains) | (gains <= 0)
    if not allow_extreme_gains:
        bad |= (gains < low) | (gains > high)
    if bad.any():
        index = tuple(bad.nonzero()[0].tolist())
        value = gains[index].item()
        raise UserError(f"gains{list(index)}={value:g} is invalid: "
                        f"{gain_error(value, allow_extreme_gains, opt_out='allow_extreme_gains=True')}.")
    return gains


def warn_if_folded_checkpoint(model: nn.Module) -> None:
    """Warn once per model that was loaded from a folder `export_folded` wrote: its weights already carry
    gains, and rescaling it multiplies them (1.5 folded then 1.5 again is 2.25)."""
    record = getattr(getattr(model, "config", None), FOLDED_KEY, None)
    if isinstance(record, dict) and not getattr(model, _WARNED_FOLDED, False):
        setattr(model, _WARNED_FOLDED, True)
        warnings.warn(f"this model is a folded export (gains {describe_folded(record)} are already in its weights): "
                      "rescaling it compounds the gains; rescale the original checkpoint instead.",
                      FunctionalHeadsWarning, stacklevel=3)


def mask_gains(mask: torch.Tensor, layout: ModelLayout) -> torch.Tensor:
    """Gains that mask the heads a bool `mask` ([layers, heads] or [batch, layers, heads]) marks: 0 there, 1
    elsewhere."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise UserError(f"a head mask must be boolean, got {mask.dtype}.")
    return (~_shaped(mask, layout, "a head mask")).float()


def _shaped(values: torch.Tensor, layout: ModelLayout, what: str) -> torch.Tensor:
    if values.dim() not in (2, 3) or tuple(values.shape[-2:]) != (layout.num_layers, layout.num_heads):
        raise UserError(f"{what} must be [layers, heads] or [batch, layers, heads] with layers={layout.num_layers} "
                        f"and heads={layout.num_heads}, got {tuple(values.shape)}.")
    return values


def head_scale(gains: torch.Tensor, head_dim: int, x: torch.Tensor) -> torch.Tensor | None:
    """The multiplier of an o_proj input x [batch, seq, heads*dim] for one layer's gains ([heads] or
    [batch, heads]): each gain repeated over its head's slice, in x's device and dtype; None if all are 1."""
    if bool((gains == 1).all()):
        return None
    scale = gains.repeat_interleave(head_dim, dim=-1)
    if scale.dim() == 2:  # per input: broadcast over the sequence
        scale = scale.view(scale.shape[0], *([1] * (x.dim() - 2)), scale.shape[-1])
    return scale.to(device=x.device, dtype=x.dtype)


class HeadScaler:
    """Forward pre-hooks on the o_proj of each layer; `set_gains` may change the gains between passes.

    Given fixed gains (or a `mask` of heads to silence: gain 0), only layers with a gain other than 1 get a
    hook (nothing runs elsewhere); without either, every layer gets one, ready for `set_gains` and
    `set_layer_gains`. A hook costs one multiply.
    """

    def __init__(self, model: nn.Module, gains: HeadMap | torch.Tensor | None = None, layout: ModelLayout | None = None,
                 allow_extreme_gains: bool = False, *, mask: torch.Tensor | None = None):
        self.layout = layout or locate(model)
        self.allow_extreme_gains = allow_extreme_gains
        self._gains: torch.Tensor | None = None
        self._scales: dict[int, torch.Tensor | None] = {}
        if gains is not None and mask is not None:
            raise ValueError("HeadScaler takes gains or a mask, not both.")
        if gains is not None:
            self.set_gains(gains)
        elif mask is not None:
            self._gains = mask_gains(mask, self.layout)
        layers = range(self.layout.num_layers) if self._gains is None else \
            (self._gains != 1).reshape(-1, *self._gains.shape[-2:]).any(0).any(-1).nonzero().flatten().tolist()
        self._handles = [self.layout.out_projs[layer].register_forward_pre_hook(self._hook(layer)) for layer in layers]

    def set_gains(self, gains: HeadMap | torch.Tensor | None) -> None:
        self._gains = None if gains is None else gains_for(gains, self.layout, self.allow_extreme_gains).clone()
        self._scales.clear()

    def set_layer_gains(self, layer: int, gains: torch.Tensor) -> None:
        """Replace one layer's gains ([heads], or [batch, heads] when the scaler holds per-input gains)."""
        self._gains[..., layer, :] = gains
        self._scales.pop(layer, None)

    def _hook(self, layer: int):
        def hook(module, args):
            if self._gains is None:
                return None
            x = args[0]
            scale = self._scales.get(layer, x)  # x marks "not cast yet"
            if scale is x or (scale is not None and (scale.dtype != x.dtype or scale.device != x.device)):
                # follow each layer's device and dtype (device_map, bf16)
                scale = self._scales[layer] = head_scale(self._gains[..., layer, :], self.layout.head_dim, x)
            if scale is None:
                return None
            if scale.dim() > 1 and scale.shape[0] != x.shape[0]:  # generate() expanded the batch (beams, returns)
                if x.shape[0] % scale.shape[0]:
                    raise UserError(f"Per-input gains for {scale.shape[0]} inputs cannot serve a batch of {x.shape[0]}.")
                scale = scale.repeat_interleave(x.shape[0] // scale.shape[0], dim=0)
            return (x * scale, *args[1:])

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def rescale(model: nn.Module, heads: HeadMap | torch.Tensor, *,
            allow_extreme_gains: bool = False) -> Iterator[HeadScaler]:
    """Within the block the model runs with the gains of `heads`; the hooks are removed on exit, also on error.
    `allow_extreme_gains` lets a raw gains tensor go outside GAIN_RANGE."""
    warn_if_folded_checkpoint(model)
    scaler = HeadScaler(model, heads, allow_extreme_gains=allow_extreme_gains)
    try:
        yield scaler
    finally:
        scaler.remove()


@contextmanager
def masked(model: nn.Module, mask: torch.Tensor) -> Iterator[HeadScaler]:
    """Within the block the heads of a bool `mask` ([layers, heads], or per input) are silenced: their outputs
    O_h multiplied by 0 before o_proj. The hooks are removed on exit, also on error."""
    scaler = HeadScaler(model, mask=mask)
    try:
        yield scaler
    finally:
        scaler.remove()


@dataclass
class _Fold:
    gains: torch.Tensor  # [heads] applied to this o_proj
    heads: list[int]
    original: torch.Tensor  # the original weight columns of those heads


def fold(model: nn.Module, heads: HeadMap | torch.Tensor, *, allow_extreme_gains: bool = False) -> None:
    """Scale the o_proj weight columns of each head by its gain, in place. Folding the same map again does
    nothing; folding another map over a folded model raises (unfold first). `allow_extreme_gains` lets a raw
    gains tensor go outside GAIN_RANGE."""
    warn_if_folded_checkpoint(model)
    layout = locate(model)
    gains = gains_for(heads, layout, allow_extreme_gains)
    if gains.dim() != 2:
        raise UserError("fold needs static gains [layers, heads]; per-input gains only work with rescale().")
    for layer, proj in enumerate(layout.out_projs):
        weight = getattr(proj, "weight", None)
        if not isinstance(proj, nn.Linear) or not isinstance(weight, torch.Tensor) or not weight.is_floating_point() \
                or type(weight) not in (torch.Tensor, nn.Parameter):
            raise UserError(f"Layer {layer}'s o_proj ({type(proj).__name__}, weight "
                            f"{getattr(weight, 'dtype', 'not a tensor')}) is quantized or not a plain Linear, so its "
                            "weights cannot be folded. Use `with fh.rescale(model, heads):` (hooks) instead.")
    for layer, proj in enumerate(layout.out_projs):
        previous = getattr(proj, _FOLD_ATTR, None)
        if previous is not None and not torch.equal(previous.gains, gains[layer]):
            raise UserError(f"Layer {layer} is already folded with other gains. Call fh.unfold(model) first.")
    for layer, proj in enumerate(layout.out_projs):
        if getattr(proj, _FOLD_ATTR, None) is not None:
            continue  # same gains already folded: idempotent
        _fold_layer(proj, gains[layer], layout.head_dim)


@torch.no_grad()
def _fold_layer(proj: nn.Linear, gains: torch.Tensor, head_dim: int) -> None:
    heads = (gains != 1).nonzero().flatten().tolist()
    columns = proj.weight.view(proj.out_features, -1, head_dim)  # [out, heads, head_dim]
    original = columns[:, heads].clone()
    columns[:, heads] = _scaled(original, gains[heads])
    setattr(proj, _FOLD_ATTR, _Fold(gains.clone(), heads, original))


def _scaled(columns: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Weight columns [out, heads, head_dim] times each head's gain, computed in float32, in their own dtype."""
    return (columns.float() * gains.to(columns.device)[None, :, None]).to(columns.dtype)


@torch.no_grad()
def folded_weight(weight: torch.Tensor, gains: torch.Tensor, head_dim: int) -> torch.Tensor:
    """A new o_proj weight [out, heads * head_dim] with each head's columns times its gain ([heads]), exactly as
    `fold` computes them in place: for an engine that takes weights rather than hooks (vLLM). Gains of 1 leave
    their columns bit-equal."""
    return _scaled(weight.reshape(weight.shape[0], -1, head_dim), gains).reshape(weight.shape)


@torch.no_grad()
def unfold(model: nn.Module) -> None:
    """Restore the o_proj weights that `fold` changed (exactly: the original columns were kept)."""
    for proj in locate(model).out_projs:
        record = getattr(proj, _FOLD_ATTR, None)
        if record is not None:
            proj.weight.view(proj.out_features, -1, record.original.shape[-1])[:, record.heads] = record.original
            delattr(proj, _FOLD_ATTR)


def is_folded(model: nn.Module) -> bool:
    """Whether `fold` has scaled any `o_proj` of the model (and `unfold` has not restored it yet)."""
    return any(getattr(proj, _FOLD_ATTR, None) is not None for proj in locate(model).out_projs)
