"""Overhead of functional-heads against vanilla, measured in the same run on the same model.

Part 1, generation: a random-weight Qwen2.5-VL (12 layers x 512 hidden, 8 heads), one image, greedy
128 new tokens. Each figure is the median over --repeats runs of (method time / vanilla time), methods
interleaved in a shuffled order each round so that drift hits all of them alike; "vanilla again" is
vanilla timed as if it were another method: its distance from 1 is the noise floor. Targets: folded 1.00, hooks <= 1.02,
dynamic <= 1 + prefill share (two-pass probes the prompt once more).

Part 2, measuring S_v: the probe (one attention row per head, model's sdpa kernel) against the eager
reference (output_attentions=True, full matrices), prompt lengths 512, 2048, 4096: time, and peak memory
above the resident set before the call (Linux VmHWM, reset first), each in a fresh process.

    python benchmarks/overhead.py [--threads 1] [--repeats 11] [--lengths 512 2048 4096] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import time

import torch
import transformers as tf

import functional_heads as fh

IMAGE, V_START, V_END = 1000, 1001, 1002
# (text config, vision config, image grid in 14 px patches): "small" runs on a CPU; "7b" is Qwen2.5-VL-7B's
# published config (random weights, no download) for a lent GPU, its image 448 px (256 image tokens).
SIZES = {
    "small": (dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=12, num_attention_heads=8,
                   num_key_value_heads=2, vocab_size=1024, rope_section=[8, 12, 12]),
              dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=4, fullatt_block_indexes=[1]), 16),
    "7b": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, vocab_size=152064, rope_section=[16, 24, 24]),
           dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                fullatt_block_indexes=[7, 15, 23, 31]), 32),
}
SETUP = {"size": "small", "device": "cpu", "dtype": torch.float32}  # set once by main() from the flags


def grid() -> int:
    return SIZES[SETUP["size"]][2]


def build_model(attn: str = "sdpa"):
    text, vision, _ = SIZES[SETUP["size"]]
    text = dict(text)
    section = text.pop("rope_section")
    torch.manual_seed(0)
    text = dict(text, max_position_embeddings=32768, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 1e6})
    vision = dict(vision, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_chans=3, window_size=112,
                  out_hidden_size=text["hidden_size"])
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=1003,
                              vision_start_token_id=V_START, vision_end_token_id=V_END)
    default = torch.get_default_dtype()
    torch.set_default_dtype(SETUP["dtype"])
    try:
        with torch.device(SETUP["device"]):  # built where it runs: a 7B model is never on the CPU
            model = tf.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    model.set_attn_implementation(attn)
    return model


def make_inputs(prompt_len: int, seed: int = 0, batch: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    side = grid()
    n_image = side * side // 4
    before = 8
    after = prompt_len - before - n_image - 2
    if after < 1:
        raise SystemExit(f"error: a prompt of {prompt_len} tokens cannot hold the {n_image} image tokens; "
                         f"use --prompt-len {n_image + 11} or more.")
    ids = torch.cat([torch.randint(10, 1000, (before,), generator=gen), torch.tensor([V_START]),
                     torch.full((n_image,), IMAGE), torch.tensor([V_END]),
                     torch.randint(10, 1000, (after,), generator=gen)])[None].repeat(batch, 1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": (ids == IMAGE).long(),
              "pixel_values": torch.randn(batch * side * side, 3 * 2 * 14 * 14, generator=gen),
              "image_grid_thw": torch.tensor([[1, side, side]] * batch)}
    return {k: v.to(SETUP["device"], SETUP["dtype"] if v.is_floating_point() else None) for k, v in inputs.items()}


def synchronize() -> None:
    if SETUP["device"].startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn) -> float:
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def generation_overhead(model, repeats: int, new_tokens: int, prompt_len: int) -> dict:
    inputs = make_inputs(prompt_len)
    layout = fh.locate(model)
    ratios = fh.visual_attention_ratios(model, inputs)[0]
    # Thresholds at quantiles of this prompt's S_v: about 6% of heads, as the paper finds best.
    low, high = torch.quantile(ratios.flatten(), torch.tensor([0.08, 0.92])).tolist()
    half = layout.num_layers // 2  # perception bands in the first half, reasoning in the second
    cfg = fh.RescaleConfig(perc_last_layer=half - 1, reas_first_layer=half, tau_perc=high, tau_reas=low,
                           g_perc=1.16, g_reas=1.3)
    heads = fh.identify_heads(ratios, cfg)
    generate = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def vanilla():
        model.generate(**inputs, **generate)

    def hooks():
        with fh.rescale(model, heads):
            model.generate(**inputs, **generate)

    def folded():
        fh.fold(model, heads)
        try:
            start = time.perf_counter()
            model.generate(**inputs, **generate)
            return time.perf_counter() - start  # the one-off fold is not part of a generation
        finally:
            fh.unfold(model)

    def dynamic(mode):
        def run():
            with fh.dynamic(model, cfg, mode=mode):
                model.generate(**inputs, **generate)
        return run

    def prefill():
        with torch.no_grad():
            model(**inputs, logits_to_keep=1)

    methods = {"vanilla": vanilla, "vanilla again": vanilla, "folded": folded, "hooks": hooks, "dynamic two-pass": dynamic("two-pass"),
               "dynamic single-pass": dynamic("single-pass"), "prefill only": prefill}
    for fn in methods.values():  # warm-up
        fn()
    times = {name: [] for name in methods}
    order = list(methods)
    for _ in range(repeats):
        random.Random(len(times["vanilla"])).shuffle(order)  # no method always runs first or last
        for name in order:
            fn = methods[name]
            seconds = fn() if name == "folded" else None
            times[name].append(seconds if seconds is not None else timed(fn))
    ratios_to_vanilla = {name: statistics.median(t / v for t, v in zip(times[name], times["vanilla"]))
                         for name in methods}
    fastest = {name: min(times[name]) / min(times["vanilla"]) for name in methods}
    return {"times": {k: statistics.median(v) for k, v in times.items()}, "ratios": ratios_to_vanilla,
            "fastest": fastest,
            "heads": int((heads.perception | heads.reasoning).sum()), "total_heads": layout.num_layers * layout.num_heads}


def _peak_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def _measure(fn) -> tuple[float, float]:
    """Seconds and peak memory (MiB above what was held before the call) of fn(): the process's resident set
    on a CPU, the allocator's peak on a GPU."""
    if SETUP["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        seconds = timed(fn)
        return seconds, (torch.cuda.max_memory_allocated() - before) / 2**20
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    before = _rss_kib()
    seconds = timed(fn)
    return seconds, (_peak_kib() - before) / 1024


def _one_measurement(method: str, length: int) -> dict:
    """Runs in its own process, so that earlier allocations cannot hide this one's peak."""
    model = build_model("sdpa" if method == "probe" else "eager")
    warm = make_inputs(128)
    inputs = make_inputs(length)

    def probe(x):
        return fh.visual_attention_ratios(model, x)

    def eager(x):
        out = model(**x, output_attentions=True, logits_to_keep=1)
        visual = x["input_ids"][0] == IMAGE
        return torch.stack([a[0, :, -1][:, visual].sum(-1) for a in out.attentions])

    fn = probe if method == "probe" else eager
    fn(warm)  # warm-up on a short prompt
    try:
        seconds, mib = _measure(lambda: fn(inputs))
    except torch.OutOfMemoryError:  # eager's full matrices of every layer at long prompts
        return {"method": method, "length": length, "seconds": None, "mib": None}
    return {"method": method, "length": length, "seconds": seconds, "mib": mib}


def probe_versus_eager(lengths: list[int], threads: int | None) -> list[dict]:
    rows = []
    for length in lengths:
        row = {"length": length}
        for method in ("probe", "eager"):
            command = [sys.executable, __file__, "--child", method, str(length), "--size", SETUP["size"],
                       "--device", SETUP["device"], "--dtype", str(SETUP["dtype"]).removeprefix("torch.")]
            out = subprocess.run(command + (["--threads", str(threads)] if threads else []), check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            result = json.loads(out)
            row[f"{method}_s"], row[f"{method}_mib"] = result["seconds"], result["mib"]
        rows.append(row)
    return rows


def throughput(batch_sizes: list[int], new_tokens: int, prompt_len: int) -> list[dict]:
    """Items per second of batched greedy generation (every row `new_tokens` long), vanilla and static
    (hooks with a map of about 6% of heads, as `fheads eval --method static` runs it)."""
    model = build_model()
    probe_inputs = make_inputs(prompt_len)
    ratios = fh.visual_attention_ratios(model, probe_inputs)[0]
    low, high = torch.quantile(ratios.flatten(), torch.tensor([0.08, 0.92])).tolist()
    half = fh.locate(model).num_layers // 2
    heads = fh.identify_heads(ratios, fh.RescaleConfig(half - 1, half, high, low, 1.16, 1.3))
    generate = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    rows = []
    for batch in batch_sizes:
        inputs = make_inputs(prompt_len, batch=batch)
        model.generate(**inputs, **generate)  # warm-up at this shape
        vanilla = timed(lambda: model.generate(**inputs, **generate))
        with fh.rescale(model, heads):
            static = timed(lambda: model.generate(**inputs, **generate))
        rows.append({"batch": batch, "vanilla_items_per_s": batch / vanilla, "static_items_per_s": batch / static})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=160)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--parts", nargs="+", choices=["generation", "probe", "throughput"],
                        default=["generation", "probe"])
    parser.add_argument("--size", choices=list(SIZES), default="small", help="small (CPU) or 7b (Qwen2.5-VL-7B's "
                                                                            "config, random weights, for a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16], help="for --parts throughput")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    SETUP.update(size=args.size, device=args.device, dtype=getattr(torch, args.dtype))
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(_one_measurement(args.child[0], int(args.child[1]))))
        return
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    print(f"machine: {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"transformers {tf.__version__}; model {args.size} in {args.dtype}")
    if "generation" in args.parts:
        print_generation(generation_overhead(build_model(), args.repeats, args.new_tokens, args.prompt_len), args)
    if "probe" in args.parts:
        print_probe(probe_versus_eager(args.lengths, args.threads))
    if "throughput" in args.parts:
        rows = throughput(args.batch_sizes, args.new_tokens, args.prompt_len)
        print(f"\nThroughput: greedy {args.new_tokens} new tokens per item, prompt {args.prompt_len} tokens")
        print("| batch | vanilla items/s | static items/s | ratio |\n|---|---|---|---|")
        for row in rows:
            print(f"| {row['batch']} | {row['vanilla_items_per_s']:.2f} | {row['static_items_per_s']:.2f} | "
                  f"{row['static_items_per_s'] / row['vanilla_items_per_s']:.3f} |")


def print_generation(gen: dict, args) -> None:
    prefill_share = gen["ratios"]["prefill only"]
    print(f"\nGeneration: random Qwen2.5-VL ({args.size}), prompt {args.prompt_len} tokens ({grid() ** 2 // 4} image), "
          f"greedy {args.new_tokens} new tokens, median of {args.repeats}; {gen['heads']}/{gen['total_heads']} "
          f"heads rescaled; vanilla {gen['times']['vanilla']:.2f} s")
    print("| method | median ratio to vanilla | ratio of fastest runs | target |\n|---|---|---|---|")
    targets = {"vanilla again": "(noise floor)", "folded": "1.00", "hooks": "<= 1.02", "dynamic two-pass": f"<= {1 + prefill_share:.3f}",
               "dynamic single-pass": f"<= {1 + prefill_share:.3f}", "prefill only": "(prefill share)"}
    for name, target in targets.items():
        print(f"| {name} | {gen['ratios'][name]:.3f} | {gen['fastest'][name]:.3f} | {target} |")


def print_probe(rows: list[dict]) -> None:
    print("\nMeasuring S_v: probe (sdpa + one attention row) vs eager output_attentions=True")
    print("| prompt tokens | probe s | eager s | time ratio | probe peak MiB | eager peak MiB |\n|---|---|---|---|---|---|")
    def number(value, form):
        return "out of memory" if value is None else format(value, form)

    for row in rows:
        ratio = row["probe_s"] / row["eager_s"] if row["probe_s"] and row["eager_s"] else None
        print(f"| {row['length']} | {number(row['probe_s'], '.2f')} | {number(row['eager_s'], '.2f')} | "
              f"{number(ratio, '.2f')} | {number(row['probe_mib'], '.0f')} | {number(row['eager_mib'], '.0f')} |")


if __name__ == "__main__":
    main()
