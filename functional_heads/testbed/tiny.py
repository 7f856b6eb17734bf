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


def save_tiny_qwen2_5_vl(folder: str | Path, seed: int = 0, layers: int = LAYERS, heads: int = HEADS) -> Path:
    """Write the model (hidden HIDDEN) and its processor (16x16 images -> 16 image tokens) to `folder`."""
    folder = Path(folder)
    vocab = save_word_level_processor(folder, WORDS, image_size=16, patch_size=2)
    config = qwen2_5_vl_config(vocab, hidden=HIDDEN, layers=layers, heads=heads, kv_heads=KV_HEADS,
                               intermediate=INTERMEDIATE,
                               vision_width=32, vision_depth=2, vision_heads=2, patch_size=2, mrope_section=[2, 2, 4])
    torch.manual_seed(seed)
    tf.Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    return folder
