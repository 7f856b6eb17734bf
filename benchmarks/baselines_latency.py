"""Latency of the decoding baselines against vanilla, measured in the same run on the same model.

A random-weight Qwen2.5-VL (12 layers x 512 hidden, the model of overhead.py), one image, greedy
--new-tokens new tokens. VCD and PAI run their second view as a stream with its own KV cache (one token
per step after its prefill); "vcd, recomputed" is the same VCD with the second view recomputed over the
whole sequence at every step, the way functional-heads did it before the cache: the ratio between the
two is what the cache saves. Each figure is the median over --repeats rounds of (method time / vanilla
time), the methods in a shuffled order each round; "vanilla again" is the noise floor.

    python benchmarks/baselines_latency.py [--threads 2] [--repeats 5] [--new-tokens 64] [--prompt-len 160]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch
import transformers as tf
from overhead import IMAGE, V_END, V_START, build_model, make_inputs
from transformers import LogitsProcessor

from functional_heads.evaluation.methods.contrastive import (
    PAIConfig,
    VCDConfig,
    diffusion_noise,
    pai_generate,
    vcd_combine,
    vcd_generate,
    with_generated,
)


class RecomputedSecondView(LogitsProcessor):
    """The reference: VCD's second view recomputed from scratch at every step (no cache of its own)."""

    def __init__(self, model, second: dict, cfg: VCDConfig):
        self.model, self.second, self.cfg, self.prompt_length = model, second, cfg, None

    def __call__(self, input_ids, scores):
        self.prompt_length = self.prompt_length or input_ids.shape[1]
        saved = self.model.model.rope_deltas
        other = self.model(**with_generated(self.second, input_ids[:, self.prompt_length:]), use_cache=False,
                           logits_to_keep=1).logits[:, -1]
        self.model.model.rope_deltas = saved
        return vcd_combine(scores.float(), other.float(), self.cfg).to(scores.dtype)


def without_image(inputs: dict) -> dict:
    """The same prompt with its image tokens (and the markers around them) taken out: PAI's second view."""
    ids = inputs["input_ids"][0]
    keep = (ids != IMAGE) & (ids != V_START) & (ids != V_END)
    text = ids[keep][None]
    return {"input_ids": text, "attention_mask": torch.ones_like(text), "mm_token_type_ids": torch.zeros_like(text)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=160)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, inputs = build_model(), make_inputs(args.prompt_len)
    generate = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    vcd = VCDConfig()
    distorted = dict(inputs, pixel_values=diffusion_noise(inputs["pixel_values"], vcd.noise_step, vcd.seed))
    methods = {
        "vanilla": lambda: model.generate(**inputs, **generate),
        "vanilla again": lambda: model.generate(**inputs, **generate),
        "vcd": lambda: vcd_generate(model, inputs, vcd, **generate),
        "pai": lambda: pai_generate(model, inputs, without_image(inputs), PAIConfig(), **generate),
        "vcd, recomputed": lambda: model.generate(**inputs, logits_processor=[RecomputedSecondView(model, distorted, vcd)],
                                                  **generate),
    }
    for fn in methods.values():  # warm-up
        fn()
    times = {name: [] for name in methods}
    order = list(methods)
    for round_ in range(args.repeats):
        random.Random(round_).shuffle(order)
        for name in order:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"transformers {tf.__version__}")
    print(f"random Qwen2.5-VL 12 layers x 512 hidden, prompt {args.prompt_len} tokens (64 image), greedy "
          f"{args.new_tokens} new tokens, median of {args.repeats}; vanilla {statistics.median(times['vanilla']):.2f} s")
    print("| method | median ratio to vanilla |\n|---|---|")
    for name in methods:
        ratio = statistics.median(t / v for t, v in zip(times[name], times["vanilla"]))
        print(f"| {name} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
