"""Batched greedy answers to (image, prompt) pairs, with whatever method context the caller holds."""

from __future__ import annotations

import time
from typing import Sequence

import torch
from PIL import Image

from ..loading import prompt_batches


@torch.no_grad()
def answer(model, processor, images: Sequence[Image.Image], prompts: Sequence[str], batch_size: int = 64,
           max_new_tokens: int = 64, progress=None) -> tuple[list[str], float]:
    """Greedy completions (special tokens kept: the answers are tagged) and the seconds they took."""
    outputs, start = [], time.perf_counter()
    for inputs in prompt_batches(processor, images, prompts, batch_size):
        inputs = {key: value.to(model.device) for key, value in inputs.items()}
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = generated[:, inputs["input_ids"].shape[1]:]
        outputs += [text.replace("<pad>", "").replace("<|im_end|>", "").strip()
                    for text in processor.batch_decode(new, skip_special_tokens=False)]
        if progress is not None:
            progress(len(new))
    return outputs, time.perf_counter() - start
