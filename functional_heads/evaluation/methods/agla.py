"""AGLA (An et al., CVPR 2025): decode with the image and with an augmented view that keeps only the
regions relevant to the prompt.

The augmented view: a BLIP image-text matching (ITM) model's GradCAM on the prompt (the cross-attention
of one text-encoder layer times its positive gradient w.r.t. the match logit, averaged over heads and
text tokens), upsampled and blurred; pixels outside the most relevant share are blacked out, the share
being 1 - ITC/2 (ITC: the image-text cosine similarity). Decoding: l + alpha * l_aug, with the tokens
whose probability under l is below beta x the top token's cut. Published defaults: alpha 2, beta 0.5,
layer 6, 35 text tokens.
AGLA's code computes the mask at the ITM model's 384x384 input and hands that 384x384 image to the VLM;
we compute it at the same grid and scale it back to the image's own size, so that the augmented view has
the resolution (and, for dynamic-resolution models, the image-token count) of the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoProcessor, BlipForImageTextRetrieval

from ...models.loading import local_folder
from ...utils.errors import UserError
from .contrastive import ContrastiveLogits, plausible


@dataclass(frozen=True)
class AGLAConfig:
    itm: str = ""  # local folder of a BLIP image-text matching model, e.g. Salesforce/blip-itm-large-coco
    alpha: float = 2.0
    beta: float = 0.5
    layer: int = 6  # the ITM text encoder's layer whose cross-attention gives the GradCAM
    max_text_tokens: int = 35  # BLIP ITM's text length
    blur: float = 0.02  # gaussian sigma, as a share of the map's side

    def __post_init__(self):
        if not self.itm:
            raise UserError("AGLA needs a BLIP image-text matching model: give its local folder as itm "
                            "(fheads eval: --method-option itm=PATH), e.g. a download of "
                            "Salesforce/blip-itm-large-coco, the model AGLA's code uses.")
        if self.alpha < 0 or not 0 < self.beta <= 1 or self.layer < 0 or self.max_text_tokens < 3 or self.blur < 0:
            raise UserError(f"AGLA needs alpha >= 0, 0 < beta <= 1, layer >= 0, max_text_tokens >= 3 and "
                            f"blur >= 0, got {self}.")


def agla_combine(logits: torch.Tensor, augmented: torch.Tensor, cfg: AGLAConfig) -> torch.Tensor:
    return (logits + cfg.alpha * augmented).masked_fill(~plausible(logits, cfg.beta), float("-inf"))


def gradcam(attention: torch.Tensor, gradient: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """[batch, side, side] relevance of each image patch to the text: attention x positive gradient
    ([batch, heads, text, 1 + patches], the first key being the image's CLS), averaged over heads and over
    the text tokens between [CLS] and [SEP]."""
    cam = (attention[..., 1:] * gradient[..., 1:].clamp(min=0)).mean(1)  # [batch, text, patches]
    tokens = text_mask.clone().float()
    tokens[:, 0] = 0
    tokens[torch.arange(len(tokens)), text_mask.sum(1) - 1] = 0  # [SEP]
    cam = (cam * tokens[..., None]).sum(1) / tokens.sum(1, keepdim=True).clamp(min=1)
    side = math.isqrt(cam.shape[-1])
    if side * side != cam.shape[-1]:
        raise UserError(f"The ITM model's {cam.shape[-1]} image patches do not form a square grid.")
    return cam.view(-1, side, side)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A [side, side] map blurred by a separable gaussian (reflected borders)."""
    radius = min(math.ceil(3 * sigma), image.shape[-1] - 1)
    if sigma <= 0 or radius < 1:
        return image
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(image)
    out = F.pad(image[None, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[0, 0]


def keep_mask(cam: torch.Tensor, size: int, keep: float, blur: float) -> torch.Tensor:
    """[size, size] True at the `keep` share of pixels with the highest (upsampled, blurred) relevance."""
    dense = F.interpolate(cam[None, None].float(), size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    dense = gaussian_blur(dense, blur * size)
    ranked = dense.flatten().sort(descending=True).values
    threshold = ranked[min(max(round(ranked.numel() * keep), 1), ranked.numel()) - 1]
    return dense >= threshold


def mask_image(image: Image.Image, keep: torch.Tensor) -> Image.Image:
    """The image with the pixels outside `keep` (a square map, stretched to the image) set to black."""
    mask = Image.fromarray(keep.cpu().numpy().astype("uint8") * 255, mode="L").resize(image.size, Image.NEAREST)
    return Image.composite(image.convert("RGB"), Image.new("RGB", image.size), mask)


class ImageTextMatcher:
    """A BLIP image-text matching model from a local folder: GradCAM maps and image-text similarity."""

    def __init__(self, path: str | Path):
        folder = local_folder(path)
        model_type = AutoConfig.from_pretrained(folder).model_type
        if model_type != "blip":
            raise UserError(f"AGLA's itm must be a BLIP image-text matching model (model_type 'blip', e.g. "
                            f"Salesforce/blip-itm-large-coco); {path} holds a '{model_type}' model.")
        self.model = BlipForImageTextRetrieval.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(folder)

    def to(self, device) -> "ImageTextMatcher":
        self.model.to(device)
        return self

    def relevance(self, images: Sequence[Image.Image], texts: Sequence[str], layer: int,
                  max_text_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """GradCAM maps [batch, side, side], ITC similarities [batch], and the model's input side in pixels."""
        layers = self.model.text_encoder.encoder.layer
        if layer >= len(layers):
            raise UserError(f"AGLA layer {layer} does not exist: the ITM text encoder has {len(layers)} layers.")
        inputs = self.processor(images=list(images), text=list(texts), padding="longest", truncation=True,
                                max_length=max_text_tokens, return_tensors="pt").to(self.model.device)
        captured = []
        hook = layers[layer].crossattention.self.register_forward_hook(lambda m, a, out: captured.append(out[1]))
        try:
            with torch.enable_grad():
                match = self.model(**inputs, use_itm_head=True).itm_score[:, 1]
                gradient, = torch.autograd.grad(match.sum(), captured[0])
        finally:
            hook.remove()
        with torch.no_grad():
            itc = self.model(**inputs, use_itm_head=False).itm_score.diagonal()
        cams = gradcam(captured[0].detach(), gradient, inputs["attention_mask"])
        return cams, itc, inputs["pixel_values"].shape[-1]


def augmented_views(matcher: ImageTextMatcher, images: Sequence[Image.Image], prompts: Sequence[str],
                    cfg: AGLAConfig) -> list[Image.Image]:
    """Each image with the regions irrelevant to its prompt blacked out."""
    cams, itc, side = matcher.relevance(images, prompts, cfg.layer, cfg.max_text_tokens)
    keep = (1 - itc / 2).clamp(max=1 - 1e-5)
    return [mask_image(image, keep_mask(cam, side, share.item(), cfg.blur))
            for image, cam, share in zip(images, cams, keep)]


def agla_generate(model, inputs: dict, augmented: dict, cfg: AGLAConfig, **generate_kwargs) -> torch.Tensor:
    """generate() with AGLA's assembly of the image's and the augmented view's logits."""
    processor = ContrastiveLogits(model, augmented, lambda l, a: agla_combine(l, a, cfg))
    return model.generate(**inputs, logits_processor=[processor], **generate_kwargs)


__all__ = ["AGLAConfig", "ImageTextMatcher", "agla_combine", "agla_generate", "augmented_views", "gradcam",
           "keep_mask", "mask_image"]
