"""A tiny random-weight Qwen2.5-VL with a word-level processor, saved as a real checkpoint folder.

For tests, examples and trying the API without a real checkpoint: it loads exactly as a downloaded one
does (`AutoModelForImageTextToText.from_pretrained(folder)`, `fh.load_processor(folder)`). Its outputs
mean nothing; it is not trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

from .sizes import HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS
from .wordlevel import qwen2_5_vl_config, save_word_level_processor

WORDS = ["user", "assistant", "how", "many", "red", "blue", "shapes", "are", "there", "?", "yes", "no", "one", "two"]


def save_tiny_qwen2_5_vl(folder: str | Path, seed: int = 0, layers: int = LAYERS, heads: int = HEADS,
                         head_dim: int | None = None, init_std: float | None = None) -> Path:
    """Write the model (hidden HIDDEN; with `head_dim`, heads * head_dim) and its processor (16x16 images -> 16
    image tokens) to `folder`. vLLM's CPU attention needs a head size of 32 or more (HIDDEN // HEADS is 16).
    With `init_std`, every weight matrix is drawn from N(0, init_std): at the default initialisation (0.02) the
    model says nearly the same whatever it is shown, at 0.1 its answers vary with the image and the prompt."""
    folder = Path(folder)
    vocab = save_word_level_processor(folder, WORDS, image_size=16, patch_size=2)
    hidden = HIDDEN if head_dim is None else heads * head_dim
    rotary_half = hidden // heads // 2  # the rotary sections (temporal, height, width) cover half a head
    config = qwen2_5_vl_config(vocab, hidden=hidden, layers=layers, heads=heads, kv_heads=KV_HEADS,
                               intermediate=INTERMEDIATE * hidden // HIDDEN, vision_width=32, vision_depth=2,
                               vision_heads=2, patch_size=2,
                               mrope_section=[rotary_half // 4, rotary_half // 4, rotary_half // 2])
    torch.manual_seed(seed)
    model = tf.Qwen2_5_VLForConditionalGeneration(config)
    if init_std is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.normal_(0, init_std)
    model.save_pretrained(folder)
    return folder
