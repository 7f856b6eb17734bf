"""Kimi-VL (moonshotai/Kimi-VL-A3B-Thinking and -Instruct) on transformers' native Kimi-K2.5 classes.

Kimi-VL ships as remote code for transformers 4.48 that picks its attention kernels itself (so S_v cannot be
probed) and does not import under 4.57 or 5.x. transformers' native `kimi_k25` classes hold the same
architecture (a MoonViT-style tower, a 2x2 patch merger and projector, a DeepSeek-V3 MLA + MoE decoder), and
transformers' own weight conversion for `kimi_k25` already renames Kimi-VL's tower and decoder keys (fused
`wqkv` split and re-ordered for rotate-half rotary, experts stacked). What is ours: the config translation,
the three projector names, and an image processor that needs no torchvision.

Facts used (from Kimi-VL's configuration, modeling, processing and image-processing code, Apache-2.0, read in
the public copy Bili-Sakura/transformers src/transformers/models/kimi_vl/): config keys `vision_config`
(`init_pos_emb_height/width`), `text_config` (DeepSeek-V3), `media_placeholder_token_id`; projector
`multi_modal_projector.{pre_norm,linear_1,linear_2}`; images: optional downscale to `in_token_limit`
patches (bicubic), pad to a multiple of 28 px (`pad_input`) or centre-crop to a multiple of 14, CLIP mean/std,
patches in raster order, `grid_h * grid_w / 4` placeholder tokens per image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from ..utils.errors import UserError

MODEL_TYPE = "kimi_vl"
IMAGE_TOKEN = "<|media_pad|>"
KEY_MAPPING = {r"^multi_modal_projector\.linear_1": "model.mm_projector.in_proj",
               r"^multi_modal_projector\.linear_2": "model.mm_projector.out_proj",
               r"^multi_modal_projector\.pre_norm": "model.mm_projector.pre_norm"}
VISION_FIELDS = {"patch_size": "patch_size", "num_attention_heads": "num_attention_heads",
                 "num_hidden_layers": "num_hidden_layers", "hidden_size": "hidden_size",
                 "intermediate_size": "intermediate_size", "merge_kernel_size": "merge_kernel_size",
                 "init_pos_emb_height": "pos_emb_height", "init_pos_emb_width": "pos_emb_width"}
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def native_config(config: dict) -> transformers.Kimi_K25Config:
    """A Kimi-VL config.json (a dict) as the native `Kimi_K25Config`."""
    if not hasattr(transformers, "Kimi_K25Config"):
        raise UserError(f"Kimi-VL loads through transformers' native Kimi-K2.5 classes, which transformers "
                        f"{transformers.__version__} does not have: pip install -U transformers (5.x).")
    vision = {VISION_FIELDS[k]: v for k, v in config.get("vision_config", {}).items() if k in VISION_FIELDS}
    text = {k: v for k, v in config.get("text_config", {}).items() if k not in ("torch_dtype", "dtype")}
    text["model_type"] = "deepseek_v3"
    return transformers.Kimi_K25Config(
        text_config=text, vision_config=vision,
        image_token_id=config.get("media_placeholder_token_id", 163605),
        projection_hidden_size=vision.get("hidden_size", 1152), projection_layer_norm_eps=1e-5,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)))


def load_model(folder: Path, config: dict, **kwargs):
    """The native model with a Kimi-VL folder's weights; a key left unloaded is an error, not random weights."""
    model, info = transformers.Kimi_K25ForConditionalGeneration.from_pretrained(
        folder, config=native_config(config), key_mapping=KEY_MAPPING, output_loading_info=True, **kwargs)
    left = {name: sorted(info.get(name) or []) for name in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(left.values()):
        shown = "; ".join(f"{name}: {', '.join(map(str, keys[:4]))}" for name, keys in left.items() if keys)
        raise UserError(f"{folder} does not hold Kimi-VL's weights as expected ({shown}). functional-heads loads "
                        "Kimi-VL checkpoints as published (moonshotai/Kimi-VL-A3B-*).")
    return model


class KimiVLImageProcessor:
    """Kimi-VL's image preprocessing on PIL and numpy (Kimi-VL's own class imports torchvision)."""

    def __init__(self, patch_size: int = 14, pad_input: bool = False, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                 in_token_limit: int = 4096, merge_kernel_size=(2, 2), **_):
        self.patch_size, self.pad_input, self.in_token_limit = patch_size, pad_input, in_token_limit
        self.mean, self.std = np.asarray(image_mean, np.float32), np.asarray(image_std, np.float32)
        self.merge_kernel_size = tuple(merge_kernel_size)

    @classmethod
    def from_folder(cls, folder: Path) -> "KimiVLImageProcessor":
        file = folder / "preprocessor_config.json"
        return cls(**(json.loads(file.read_text()) if file.is_file() else {}))

    def resized(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        patches = (width // self.patch_size) * (height // self.patch_size)
        if patches > self.in_token_limit:
            scale = math.sqrt(self.in_token_limit / patches)
            image = image.resize((int(width * scale), int(height * scale)), Image.Resampling.BICUBIC)
        width, height = image.size
        if self.pad_input:  # black right and bottom margins up to whole merged patches
            step_h, step_w = (k * self.patch_size for k in self.merge_kernel_size)
            padded = Image.new(image.mode, (width + (-width) % step_w, height + (-height) % step_h))
            padded.paste(image, (0, 0))
            return padded
        crop_w, crop_h = width - width % self.patch_size, height - height % self.patch_size
        left, top = int(round((width - crop_w) / 2)), int(round((height - crop_h) / 2))
        return image.crop((left, top, left + crop_w, top + crop_h))

    def patches(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        image = self.resized(image.convert("RGB"))
        pixels = (np.asarray(image, np.float32) / 255 - self.mean) / self.std  # [H, W, C]
        p = self.patch_size
        grid_h, grid_w = pixels.shape[0] // p, pixels.shape[1] // p
        if grid_h >= 512 or grid_w >= 512:
            raise ValueError(f"an image of {grid_h}x{grid_w} patches exceeds Kimi-VL's position embedding (< 512).")
        tiles = torch.from_numpy(pixels).permute(2, 0, 1).reshape(3, grid_h, p, grid_w, p).permute(1, 3, 0, 2, 4)
        return tiles.reshape(-1, 3, p, p), (grid_h, grid_w)

    def __call__(self, images, return_tensors="pt") -> dict:
        flat = [image for group in images for image in (group if isinstance(group, (list, tuple)) else [group])]
        tiles, grids = zip(*(self.patches(image) for image in flat))
        return {"pixel_values": torch.cat(tiles),
                "image_grid_thw": torch.tensor([[1, h, w] for h, w in grids], dtype=torch.long)}


class KimiVLProcessor:
    """Chat template, tokenizer and images for the native model: each image placeholder becomes its
    grid_h * grid_w / 4 tokens, and the grid is passed as `image_grid_thw` [images, 3] as the native model reads it."""

    def __init__(self, image_processor: KimiVLImageProcessor, tokenizer, chat_template: str | None = None):
        self.image_processor, self.tokenizer, self.chat_template = image_processor, tokenizer, chat_template
        self.image_token = IMAGE_TOKEN

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, **kwargs) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def __call__(self, images=None, text=None, return_tensors="pt", **kwargs) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        out = {}
        if images is not None:
            out = self.image_processor(images)
            merge = math.prod(self.image_processor.merge_kernel_size)
            counts = iter((out["image_grid_thw"][:, 1:].prod(-1) // merge).tolist())
            texts = [self._expanded(t, counts) for t in texts]
        return {**self.tokenizer(texts, return_tensors=return_tensors, **kwargs), **out}

    def _expanded(self, text: str, counts) -> str:
        pieces = text.split(self.image_token)
        return pieces[0] + "".join(self.image_token * next(counts) + piece for piece in pieces[1:])

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


def load_processor(folder: Path, trust_remote_code: bool = False) -> KimiVLProcessor:
    """Kimi-VL's tokenizer (its tiktoken tokenizer is remote code: trust_remote_code and `pip install tiktoken`),
    the folder's chat template and our image processor."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    template = folder / "chat_template.jinja"
    return KimiVLProcessor(KimiVLImageProcessor.from_folder(folder), tokenizer,
                           template.read_text() if template.is_file() else None)
