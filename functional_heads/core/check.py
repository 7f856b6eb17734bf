"""Will the method work on this model? Measured, not assumed: S_v from the probe against the full attention
matrices of the eager kernel, a padded batch against its rows one at a time, rescaling's effect on the
logits, and folded weights against hooks.

`check_model(model, batch, rows)` takes processor inputs for a batch of prompts of different lengths (left
padded) and the same prompts one per dict; `fheads check` builds them from a local checkpoint and a
generated image, `scripts/architecture_matrix.py` from tiny models of every family.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from PIL import Image, ImageDraw

from ..models.architectures import ModelLayout, locate
from ..utils.errors import FunctionalHeadsWarning
from .attention import ScopedAttention
from .ratios import query_positions, visual_attention_ratios, visual_token_mask
from .rescale import fold, rescale, unfold

REFERENCE = "functional_heads_eager_reference"


@dataclass
class _Reference:
    rows: torch.Tensor  # [batch] i*
    visual: torch.Tensor  # [batch, seq]
    ratios: torch.Tensor  # [batch, layers, heads], filled per layer


def _eager_reference_attention(module, query, key, value, attention_mask, **kwargs):
    """The model's own eager kernel; its full attention matrix gives S_v at i* by summing image columns."""
    scope = _reference_scope.current()
    state = scope.state
    output, weights = scope.kernel(module)(module, query, key, value, attention_mask, **kwargs)
    layer = scope.layer(module)
    if layer is not None and query.shape[2] == state.visual.shape[1]:
        batch = torch.arange(weights.shape[0], device=weights.device)
        row = weights[batch, :, state.rows.to(weights.device)].float()  # [batch, heads, keys]
        state.ratios[:, layer] = (row * state.visual.to(row.device, row.dtype)[:, None]).sum(-1).cpu()
    return output, weights


_reference_scope: ScopedAttention[_Reference] = ScopedAttention(REFERENCE, _eager_reference_attention,
                                                                inside="`eager_ratios`")


@torch.no_grad()
def eager_ratios(model, inputs: dict, layout: ModelLayout | None = None) -> torch.Tensor:
    """S_v [batch, layers, heads] at the last prompt token, from the eager kernel's full attention matrices."""
    layout = layout or locate(model)
    ids = inputs["input_ids"]
    state = _Reference(query_positions(inputs.get("attention_mask"), ids), visual_token_mask(ids, layout),
                       torch.full((ids.shape[0], layout.num_layers, layout.num_heads), float("nan")))
    with _reference_scope.active(layout, state, base="eager"):
        model(**inputs, use_cache=False)
    return state.ratios


@dataclass
class CheckResult:
    """Largest absolute differences measured on one model; `tolerance` is what counts as equal in its dtype."""

    model_type: str
    layers: int
    heads: int
    dtype: str
    sv_vs_eager: float  # probe S_v against the eager kernel's attention matrices
    batch_vs_single: float  # probe S_v of the padded batch against each prompt alone
    padding_effect: float  # the model's own last-token logits, padded batch vs one prompt at a time (relative)
    sv_max: float  # the largest S_v seen (0 would mean the image tokens were never attended: a broken probe)
    rescale_effect: float  # how far random gains move the last-token logits (must be > 0)
    fold_vs_hooks: float  # logits of folded weights against hooks, relative to the largest logit
    unfold_restores: float  # logits after unfold against before fold
    tolerance: float
    seconds: float

    @property
    def sv_exact(self) -> bool:
        return self.sv_vs_eager <= self.tolerance and self.batch_vs_single <= self.tolerance and self.sv_max > 0

    @property
    def rescale_works(self) -> bool:
        return self.rescale_effect > self.tolerance and self.fold_vs_hooks <= self.tolerance \
            and self.unfold_restores == 0

    @property
    def ok(self) -> bool:
        return self.sv_exact and self.rescale_works

    def lines(self) -> list[str]:
        def mark(good: bool) -> str:
            return "ok  " if good else "FAIL"

        tol = self.tolerance
        return [
            f"{self.model_type}: {self.layers} layers x {self.heads} heads, {self.dtype}, checked in {self.seconds:.1f} s",
            f"{mark(self.sv_vs_eager <= tol)} S_v probe vs eager attention matrices  max |diff| {self.sv_vs_eager:.2e}",
            f"{mark(self.batch_vs_single <= tol)} S_v padded batch vs one prompt at a time  max |diff| "
            f"{self.batch_vs_single:.2e}",
            *([f"note the model's own logits change with padding by {self.padding_effect:.1e} (relative): "
               "padded batches are not exact for it, with or without functional-heads; use batch size 1"]
              if self.padding_effect > self.tolerance else []),
            f"{mark(self.sv_max > 0)} the image is attended                   max S_v {self.sv_max:.3f}",
            f"{mark(self.rescale_effect > tol)} rescaling moves the logits              max |diff| "
            f"{self.rescale_effect:.2e}",
            f"{mark(self.fold_vs_hooks <= tol)} folded weights vs hooks (logits)        max |diff| / max |logit| "
            f"{self.fold_vs_hooks:.2e}",
            f"{mark(self.unfold_restores == 0)} unfold restores the weights (logits)    max |diff| "
            f"{self.unfold_restores:.2e}",
            ("verdict: works (S_v exact, rescaling and folding work)" if self.ok else
             "verdict: does NOT work as is; see the FAIL lines") + f" (tolerance {tol:g} for {self.dtype})",
        ]

    def to_dict(self) -> dict:
        return {**asdict(self), "sv_exact": self.sv_exact, "rescale_works": self.rescale_works, "ok": self.ok}


def tolerance_for(dtype: torch.dtype) -> float:
    """Two kernels agree to float rounding: about 1e-6 in float32, a few 1e-3 in 16-bit floats."""
    return 1e-4 if dtype == torch.float32 else 3e-2


def _last_logits(model, inputs: dict) -> torch.Tensor:
    output = model(**inputs, use_cache=False)
    logits = output[0] if isinstance(output, tuple) else output.logits  # return_dict=False gives a tuple
    return logits[:, -1].float().cpu()


def check_gains(layout: ModelLayout, seed: int = 0) -> torch.Tensor:
    """Gains in [1, 1.5] for every head, from a private generator (the caller's RNG is left alone)."""
    generator = torch.Generator().manual_seed(seed)
    return 1 + 0.5 * torch.rand(layout.num_layers, layout.num_heads, generator=generator)


@torch.no_grad()
def check_model(model, batch: dict, rows: Sequence[dict]) -> CheckResult:
    """Run every check on `batch` (two or more left-padded prompts) and `rows` (the same prompts, one each)."""
    start = time.perf_counter()
    layout = locate(model)
    dtype = next(model.parameters()).dtype
    probed = visual_attention_ratios(model, batch)
    sv_vs_eager = (probed - eager_ratios(model, batch, layout)).abs().max().item()
    singles = torch.cat([visual_attention_ratios(model, row) for row in rows])
    batch_vs_single = (probed - singles).abs().max().item()
    gains = check_gains(layout)
    vanilla = _last_logits(model, batch)
    alone = torch.cat([_last_logits(model, row) for row in rows])
    with warnings.catch_warnings():  # on a folded export: the check measures the mechanism, with its own gains
        warnings.simplefilter("ignore", FunctionalHeadsWarning)
        with rescale(model, gains):
            hooked = _last_logits(model, batch)
        fold(model, gains)
    try:
        folded = _last_logits(model, batch)
    finally:
        unfold(model)
    restored = _last_logits(model, batch)
    scale = max(hooked.abs().max().item(), 1.0)
    return CheckResult(layout.model_type, layout.num_layers, layout.num_heads, str(dtype).removeprefix("torch."),
                       sv_vs_eager, batch_vs_single,
                       (vanilla - alone).abs().max().item() / max(vanilla.abs().max().item(), 1.0), probed.max().item(), (hooked - vanilla).abs().max().item(),
                       (folded - hooked).abs().max().item() / scale, (restored - vanilla).abs().max().item(),
                       tolerance_for(dtype), time.perf_counter() - start)


def check_image(size: int = 224) -> Image.Image:
    """A generated test image (a few coloured shapes): nothing to download."""
    image = Image.new("RGB", (size, size), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    step = size // 4
    draw.ellipse((step // 2, step // 2, step * 2, step * 2), fill=(200, 30, 30))
    draw.rectangle((step * 2, step * 2, step * 3 + step // 2, step * 3 + step // 2), fill=(30, 60, 200))
    draw.polygon([(step, size - step // 2), (step * 2, step * 2 + step // 2), (step * 3, size - step // 2)],
                 fill=(30, 160, 60))
    return image


PROMPTS = ("How many shapes are in the image?",
           "Look at the image carefully. What colour is the circle, and is it to the left of the square?")


def check_checkpoint(model, processor) -> CheckResult:
    """`check_model` on a loaded checkpoint: two prompts of different lengths about one generated image."""
    from ..models.loading import prompt_inputs, to_model_device

    image = check_image()
    batch = to_model_device(prompt_inputs(processor, [image, image], list(PROMPTS)), model)
    rows = [to_model_device(prompt_inputs(processor, [image], [prompt]), model) for prompt in PROMPTS]
    return check_model(model, batch, rows)
