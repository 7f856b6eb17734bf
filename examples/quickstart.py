"""The quick start of docs/tutorial/your-model.md. Pass a local checkpoint folder (Qwen2.5-VL, Ocean-R1,
LLaVA, ...) and an image; without them it makes a tiny random Qwen2.5-VL in a temporary folder (removed at
the end) and a random image, to show the API (its numbers mean nothing).

    python examples/quickstart.py [MODEL_FOLDER [IMAGE]]
"""

import sys
import tempfile

import numpy as np
import torch
from PIL import Image

import functional_heads as fh
from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl


def quickstart(path, image):
    # --- the snippet ---
    model, processor = fh.load_model(path), fh.load_processor(path)     # a local folder: nothing is downloaded
    inputs = fh.prompt_inputs(processor, [image], ["how many red shapes are there ?"])

    ratios = fh.visual_attention_ratios(model, inputs)    # S_v, float32 [batch, layers, heads]
    half = ratios.shape[1] // 2                           # perception: the shallow half; reasoning: the deep half
    # thresholds that pick the paper's share of heads (about 6%, half of it each class) on this model's S_v
    tau_perc, tau_reas = fh.thresholds_for_shares(ratios[0], half - 1, half, perc_share=0.032, reas_share=0.032)
    cfg = fh.RescaleConfig(perc_last_layer=half - 1, reas_first_layer=half, tau_perc=tau_perc, tau_reas=tau_reas,
                           g_perc=1.16, g_reas=1.30)      # or fh.RescaleConfig.preset("ocean-r1") on a 7B
    heads = fh.identify_heads(ratios[0], cfg)             # HeadMap
    print("S_v per layer:", ratios[0].mean(-1).numpy().round(3))
    print(f"selected: {heads.share_selected:.1%} of {heads.num_layers * heads.num_heads} heads")
    print("perception heads:", heads.perception.nonzero().tolist())
    print("reasoning heads: ", heads.reasoning.nonzero().tolist())

    with fh.rescale(model, heads):                        # hooks on o_proj, removed on exit
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        rescaled = model(**inputs).logits[0, -1]
    print("generated:", processor.batch_decode(out[:, inputs["input_ids"].shape[1]:]))
    print("largest change of a next-token logit:", (rescaled - model(**inputs).logits[0, -1]).abs().max().item())

    fh.fold(model, heads)                                 # same outputs, zero cost; fh.unfold(model) undoes it
    print("folded equals hooks:", (model(**inputs).logits[0, -1] - rescaled).abs().max().item() < 1e-5)


if __name__ == "__main__":
    with torch.no_grad(), tempfile.TemporaryDirectory() as scratch:
        path = sys.argv[1] if len(sys.argv) > 1 else save_tiny_qwen2_5_vl(scratch)
        image = (Image.open(sys.argv[2]).convert("RGB") if len(sys.argv) > 2 else
                 Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)))
        quickstart(path, image)
