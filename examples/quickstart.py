"""The README's quick start. Pass a local checkpoint folder (Qwen2.5-VL, Ocean-R1, LLaVA, ...); without one
it makes a tiny random Qwen2.5-VL to show the API (its numbers mean nothing).

    python examples/quickstart.py [MODEL_FOLDER]
"""

import sys
import tempfile

import torch

import numpy as np
from PIL import Image

from functional_heads.testing import save_tiny_qwen2_5_vl

path = sys.argv[1] if len(sys.argv) > 1 else save_tiny_qwen2_5_vl(tempfile.mkdtemp())
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))

torch.set_grad_enabled(False)

# --- the snippet ---
import functional_heads as fh

model, processor = fh.load_model(path), fh.load_processor(path)
inputs = fh.prompt_inputs(processor, [image], ["how many red shapes are there ?"])

cfg = fh.RescaleConfig(perc_last_layer=1, reas_first_layer=2, tau_perc=0.535, tau_reas=0.531,
                       g_perc=1.16, g_reas=1.30)          # or fh.RescaleConfig.preset("ocean-r1") on a 7B
ratios = fh.visual_attention_ratios(model, inputs)    # S_v, float32 [batch, layers, heads]
heads = fh.identify_heads(ratios[0], cfg)             # HeadMap
print("S_v per layer:", ratios[0].mean(-1).numpy().round(3))
print("perception heads:", heads.perception.nonzero().tolist())
print("reasoning heads: ", heads.reasoning.nonzero().tolist())

with fh.rescale(model, heads):                        # hooks on o_proj, removed on exit
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    rescaled = model(**inputs).logits[0, -1]
print("generated:", processor.batch_decode(out[:, inputs["input_ids"].shape[1]:]))
print("largest change of a next-token logit:", (rescaled - model(**inputs).logits[0, -1]).abs().max().item())

fh.fold(model, heads)                                 # same outputs, zero cost; fh.unfold(model) undoes it
print("folded equals hooks:", (model(**inputs).logits[0, -1] - rescaled).abs().max().item() < 1e-5)
