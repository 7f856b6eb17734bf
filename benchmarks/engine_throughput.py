"""Engine throughput: `fheads eval`'s two engines, transformers (`--engine hf`, `HFBackend`) and vLLM (`--engine vllm`,
`VLLMBackend`), on the same items and the same random-weight model folder, in one run: start-up apart (model load
or engine build, then a short warm-up), then items/s and generated tokens/s of each, and their greedy answers
compared item by item (identical token sequences, and where the others first differ).

    python benchmarks/engine_throughput.py [--size tiny|small|7b] [--items N] [--lengths MEDIAN MAX] [--spread S]
        [--min-length N] [--batch-size B] [--vllm-batch-size N] [--max-num-seqs N] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--threads T] [--vllm-option KEY=VALUE ...] [--out engine_throughput.json]

Models, random weights built from a config (nothing is downloaded), the same folder for both engines:
- tiny: the testbed's Qwen2.5-VL with heads of 32 (`testbed.tiny.save_tiny_qwen2_5_vl`, as tests/test_vllm_engine.py
  builds it; vLLM's CPU attention takes no head smaller than 32), 16 image tokens. A couple of minutes on a CPU.
- 7b: Qwen2.5-VL-7B's published config (28 layers x 3584, 28 heads of 128, 4 KV heads, vocabulary 152064, the
  32-block vision tower) with the testbed's word-level processor at 448 px (256 image tokens), for a lent GPU.
- small: the 7b structure (vocabulary, 448 px images, window attention, untied embeddings) at tiny widths: the 7b
  code path, tried on a CPU first.
Each item is a shapes test item (its image and question, cycled when --items exceeds the split).

Output lengths: each item gets its own target length L_i, drawn from a log-normal of median MEDIAN and log-spread
S (seeded; clipped to --min-length..MAX), as reasoning chains vary. Both engines generate exactly L_i tokens for
item i, greedy, whatever the model says: a random-weight model's end token would end its chains at arbitrary points,
not at the lengths asked. vLLM: per-request `max_tokens=L_i, ignore_eos=True`; vLLM retires each sequence when it
is done and takes the next request into its place (continuous batching). transformers: the model's generation config
without an end token, and a per-row stopping criterion that marks row i done at L_i. `generate` keeps computing a
finished row until the longest row of its batch is done: that is what a static batch costs on outputs of varied
lengths, the cost this comparison is about, so it is kept, and the token slots computed (rows x longest, per batch)
are reported beside the tokens kept. (Cutting every batch to its shortest row, or sorting items by their known
length, would hide that cost: `fheads eval` cannot know an answer's length before generating it.)

Both engines go through `fheads eval`'s answering path (`Backend.answer`: for transformers the method's `generate`
under its logits check; for vLLM the prompt check and the running engine's `generate`), with the items' images
loaded beforehand (loading images and scoring answers are the same work for either engine). Items are batched in
their order. `fheads eval --engine vllm` hands vLLM --batch-size items per call; --vllm-batch-size 0 (the default)
hands it all of them, which is `fheads eval --engine vllm --batch-size N` with N at least the number of items.

Threads on a CPU: transformers uses --threads (default: torch's, every core); vLLM's worker binds its own
(VLLM_CPU_OMP_THREADS_BIND=auto: one thread per physical core, less one core kept for vLLM's scheduler process, so
one thread on a 2-core machine). Each engine runs as it sets itself up by default; the JSON records both settings.

Answers are compared as token ids (their first L_i tokens): identical or not, and for those that differ the position
of the first different token. In float32 they should all agree (tests/test_vllm_engine.py); in bfloat16 the two
engines' kernels round differently and greedy choices between near-equal logits (common with random weights) part.

Prints a markdown table with the ratios vLLM / transformers measured in the same run, and writes the raw figures
to --out (JSON, rewritten after each phase, so that a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functional_heads.evaluation.engine import Decoding, HFBackend  # noqa: E402
from functional_heads.evaluation.vllm_engine import VLLMBackend, VLLMOptions  # noqa: E402
from functional_heads.utils.errors import FunctionalHeadsError  # noqa: E402
from functional_heads.utils.files import atomic_write_text  # noqa: E402


@dataclass(frozen=True)
class Size:
    """A model to build and the run's defaults for it."""

    items: int
    lengths: tuple[int, int]  # median and largest output length
    shortest: int  # output length
    spread: float  # log-normal sigma of the output lengths
    batch_size: int  # transformers' batch
    device: str
    dtype: str
    text: dict | None = None  # text config (None: the testbed's tiny model)
    vision: dict | None = None


VOCABULARY = 152064  # Qwen2.5-VL's
SIZES = {
    "tiny": Size(items=96, lengths=(96, 640), shortest=8, spread=0.7, batch_size=16, device="cpu", dtype="float32"),
    "small": Size(items=32, lengths=(64, 256), shortest=8, spread=0.7, batch_size=16, device="cpu", dtype="float32",
                  text=dict(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=256, mrope_section=[4, 6, 6]),
                  vision=dict(vision_width=64, vision_depth=4, vision_heads=2, intermediate=128,
                              fullatt_block_indexes=[1, 3])),
    # Qwen2.5-VL-7B-Instruct's config.json
    # reasoning chains: 1k tokens at least, median 2k (seed 0 draws 1024 to 4742 tokens, 71k in all)
    "7b": Size(items=32, lengths=(2048, 8192), shortest=1024, spread=0.5, batch_size=32, device="cuda",
               dtype="bfloat16",
               text=dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, mrope_section=[16, 24, 24]),
               vision=dict(vision_width=1280, vision_depth=32, vision_heads=16, intermediate=3420,
                           fullatt_block_indexes=[7, 15, 23, 31])),
}


# ---------------------------------------------------------------- the model

def save_model(folder: Path, size: str, device: str, dtype: str) -> Path:
    """The size's random-weight Qwen2.5-VL and its processor, saved as a checkpoint folder both engines load."""
    spec = SIZES[size]
    if spec.text is None:
        from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl

        return save_tiny_qwen2_5_vl(folder, head_dim=32, init_std=0.1)  # answers that vary with the item
    import transformers as tf

    from functional_heads.testbed.tiny import WORDS
    from functional_heads.testbed.wordlevel import qwen2_5_vl_config, save_word_level_processor

    vocab = save_word_level_processor(folder, WORDS, image_size=448, patch_size=14)  # 256 image tokens
    text, vision = spec.text, spec.vision
    config = qwen2_5_vl_config(vocab, hidden=text["hidden"], layers=text["layers"], heads=text["heads"],
                               kv_heads=text["kv_heads"], intermediate=text["intermediate"],
                               vision_width=vision["vision_width"], vision_depth=vision["vision_depth"],
                               vision_heads=vision["vision_heads"], patch_size=14,
                               mrope_section=text["mrope_section"], max_positions=32768)
    # what the testbed's small config sets otherwise: the real vocabulary (its lm_head is a large part of a step),
    # untied embeddings, the vision tower's MLP, window attention with full attention in a few blocks
    config.text_config.vocab_size = VOCABULARY
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = False
    config.vision_config.intermediate_size = vision["intermediate"]
    config.vision_config.fullatt_block_indexes = vision["fullatt_block_indexes"]
    config.vision_config.window_size = 112
    default = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):  # built where it runs: a 7B model is not initialised on the CPU
            model = tf.Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def target_lengths(n: int, median: int, largest: int, spread: float, seed: int = 0, shortest: int = 1) -> list[int]:
    """n output lengths from a log-normal of this median and log-spread, clipped to shortest..largest (seeded)."""
    draw = random.Random(seed)
    return [min(largest, max(shortest, round(draw.lognormvariate(math.log(median), spread)))) for _ in range(n)]


def shapes_items(n: int) -> list[tuple[str, object]]:
    """(prompt, image) of the first n shapes test items, cycled when n exceeds the split."""
    from functional_heads.evaluation.benchmarks import get_benchmark

    examples = list(get_benchmark("shapes").examples(None, "test"))
    return [(examples[i % len(examples)].prompt, examples[i % len(examples)].load_image()) for i in range(n)]


# ---------------------------------------------------------------- each engine generating exactly L_i tokens

class RowLengths(StoppingCriteria):
    """transformers stopping criterion: row i is done once it has `lengths[i]` new tokens."""

    def __init__(self, lengths: list[int]):
        self.lengths, self.start = lengths, None

    def __call__(self, input_ids, scores, **kwargs):
        if self.start is None:  # first called after the first new token
            self.start = input_ids.shape[1] - 1
        return input_ids.shape[1] - self.start >= torch.tensor(self.lengths, device=input_ids.device)


class LengthBound:
    """A method whose `generate` stops row i at lengths[i] and keeps each row's first lengths[i] new token ids."""

    def __init__(self, method, lengths: list[int]):
        self.method, self.lengths, self.tokens = method, lengths, []

    def __getattr__(self, name):
        return getattr(self.method, name)

    def generate(self, model, processor, images, prompts, **kwargs):
        out = self.method.generate(model, processor, images, prompts,
                                   stopping_criteria=StoppingCriteriaList([RowLengths(self.lengths)]), **kwargs)
        new = out.tokens[:, out.prompt_length:]
        self.tokens = [new[row, :length].tolist() for row, length in enumerate(self.lengths)]
        return out


class Recording:
    """A vLLM `LLM` that keeps the outputs of its last `generate` (their token ids)."""

    def __init__(self, llm):
        self._llm, self.outputs = llm, []

    def generate(self, *args, **kwargs):
        self.outputs = self._llm.generate(*args, **kwargs)
        return self.outputs

    def __getattr__(self, name):
        return getattr(self._llm, name)


class LengthBoundVLLM(VLLMBackend):
    """`VLLMBackend` whose request for row i asks exactly lengths[i] tokens (`ignore_eos`)."""

    lengths: list[int] = []

    def __init__(self, llm, *rest):
        super().__init__(Recording(llm), *rest)

    def sampling_params(self, decoding: Decoding, row: int):
        params = super().sampling_params(replace(decoding, max_new_tokens=self.lengths[row]), row)
        params.ignore_eos = True  # read when the request is processed (vLLM sets it so itself)
        return params

    def tokens(self) -> list[list[int]]:
        return [list(out.outputs[0].token_ids) for out in self.llm.outputs]


def load_hf(folder: Path, dtype: str, device: str) -> HFBackend:
    """transformers' backend on the folder, its generation config without an end token: a row ends at its length
    (`RowLengths`) alone, as vLLM's requests do with `ignore_eos`."""
    backend = HFBackend.load(folder, dtype=dtype, device_map=device if device != "cpu" else None)
    backend.model.generation_config.eos_token_id = None
    return backend


def batches(n: int, size: int) -> list[range]:
    size = size or n
    return [range(start, min(n, start + size)) for start in range(0, n, size)]


def generate_hf(backend: HFBackend, items: list, lengths: list[int], batch_size: int, method) -> list[list[int]]:
    tokens = []
    for rows in batches(len(items), batch_size):
        bound = LengthBound(method, [lengths[i] for i in rows])
        backend.answer([items[i][0] for i in rows], [items[i][1] for i in rows], bound,
                       Decoding(max_new_tokens=max(bound.lengths)))
        tokens += bound.tokens
    return tokens


def generate_vllm(backend: LengthBoundVLLM, items: list, lengths: list[int], batch_size: int,
                  method) -> list[list[int]]:
    tokens = []
    for rows in batches(len(items), batch_size):
        backend.lengths = [lengths[i] for i in rows]
        backend.answer([items[i][0] for i in rows], [items[i][1] for i in rows], method,
                       Decoding(max_new_tokens=max(backend.lengths)))
        tokens += backend.tokens()
    return tokens


# ---------------------------------------------------------------- comparing

def compare_answers(first: list[list[int]], second: list[list[int]]) -> dict:
    """Item by item: how many token sequences are identical, how many differ, and where the differing ones part
    (the index of their first different token, and that index as a share of the shorter sequence)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} answers against {len(second)}")
    parted = []
    for a, b in zip(first, second):
        if a != b:
            index = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            parted.append((index, index / max(1, min(len(a), len(b)))))
    return {"items": len(first), "identical": len(first) - len(parted), "differ": len(parted),
            "first_difference_median": statistics.median(p[0] for p in parted) if parted else None,
            "first_difference_share_median": statistics.median(p[1] for p in parted) if parted else None}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def engine_figures(name: str, load_s: float, warm_s: float, seconds: float, lengths: list[int],
                   slots: int | None = None) -> dict:
    tokens = sum(lengths)
    row = {"engine": name, "load_s": load_s, "warmup_s": warm_s, "generate_s": seconds, "items": len(lengths),
           "tokens": tokens, "items_per_s": len(lengths) / seconds, "tokens_per_s": tokens / seconds}
    if slots is not None:
        row.update(token_slots=slots, slots_used=tokens / slots)
    return row


# ---------------------------------------------------------------- the run

def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --vllm-option {pair}: expected KEY=VALUE.")
        options[key] = value
    return options


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--items", type=int, help="default: the size's (tiny 96, small 32, 7b 32)")
    parser.add_argument("--lengths", type=int, nargs=2, metavar=("MEDIAN", "MAX"),
                        help="output lengths: median and largest (default: tiny 96 640, small 64 256, 7b 2048 8192)")
    parser.add_argument("--min-length", type=int, help="shortest output (default: tiny and small 8, 7b 1024)")
    parser.add_argument("--spread", type=float, help="log-normal sigma of the output lengths (default: 0.7, 7b 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="of the output lengths")
    parser.add_argument("--batch-size", type=int, help="transformers' batch (default: tiny 16, small 16, 7b 32)")
    parser.add_argument("--vllm-batch-size", type=int, default=0,
                        help="items per vLLM call (fheads eval's --batch-size); 0: all at once")
    parser.add_argument("--max-num-seqs", type=int, help="vLLM's sequences decoded at once (default: vLLM's)")
    parser.add_argument("--device", help="cpu or cuda (default: the size's)")
    parser.add_argument("--dtype", help="float32 or bfloat16 (default: tiny and small float32, 7b bfloat16)")
    parser.add_argument("--threads", type=int, help="torch threads of transformers (default: torch's choice); vLLM's "
                                                    "CPU worker binds its own (VLLM_CPU_OMP_THREADS_BIND)")
    parser.add_argument("--vllm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a vLLM engine setting, as fheads eval takes it")
    parser.add_argument("--engines", nargs="+", choices=["vllm", "hf"], default=["vllm", "hf"])
    parser.add_argument("--model", type=Path, help="a folder this script built before (skips building)")
    parser.add_argument("--keep-model", type=Path, help="build the model into this folder and keep it")
    parser.add_argument("--out", type=Path, default=Path("engine_throughput.json"))
    args = parser.parse_args(argv)
    spec = SIZES[args.size]
    device, dtype = args.device or spec.device, args.dtype or spec.dtype
    n, batch_size = args.items or spec.items, args.batch_size or spec.batch_size
    median, largest = args.lengths or spec.lengths
    shortest = args.min_length or min(spec.shortest, median)
    args.spread = spec.spread if args.spread is None else args.spread
    if not 1 <= shortest <= median <= largest or n < 1 or batch_size < 1 or args.vllm_batch_size < 0:
        raise SystemExit("error: --lengths and --min-length need 1 <= MIN <= MEDIAN <= MAX, and --items and "
                         "--batch-size at least 1.")
    try:
        with torch.no_grad():
            return run(args, device, dtype, n, batch_size, (shortest, median, largest))
    except FunctionalHeadsError as err:
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None


def run(args, device: str, dtype: str, n: int, batch_size: int, bounds: tuple[int, int, int]) -> dict:
    from functional_heads.evaluation.methods import get_method
    from functional_heads.evaluation.vllm_engine import require_vllm

    if "vllm" in args.engines:
        require_vllm()  # before the model is built
    if args.threads:
        torch.set_num_threads(args.threads)
    shortest, median, largest = bounds
    lengths = target_lengths(n, median, largest, args.spread, args.seed, shortest)
    items = shapes_items(n)
    result = {"size": args.size, "device": device, "dtype": dtype, "items": n, "batch_size": batch_size,
              "vllm_batch_size": args.vllm_batch_size or n, "lengths": {
                  "median": median, "max": largest, "min": shortest, "spread": args.spread, "seed": args.seed,
                  "drawn_median": statistics.median(lengths), "drawn_min": min(lengths), "drawn_max": max(lengths),
                  "total": sum(lengths), "per_item": lengths},
              "machine": machine(device), "engines": {}}

    def save():
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")

    workdir = tempfile.TemporaryDirectory(prefix="engine_throughput_")
    folder = args.model
    if folder is None:
        folder = args.keep_model or Path(workdir.name) / "model"
        result["build_s"], _ = timed(lambda: save_model(folder, args.size, device, dtype), device)
        print(f"built the {args.size} model in {result['build_s']:.1f} s ({folder})", flush=True)
    method = get_method("vanilla")
    warm_items, warm_lengths = items[:2], [4, 2]
    tokens = {}
    print(f"{n} items, output lengths median {statistics.median(lengths):g} (from {min(lengths)} to "
          f"{max(lengths)}, {sum(lengths)} tokens in all); {device}, {dtype}", flush=True)
    for engine in args.engines:
        if engine == "vllm":
            options = VLLMOptions.parse({**vllm_defaults(args, device, items, largest, folder),
                                         **parse_options(args.vllm_option)})
            load_s, backend = timed(lambda: LengthBoundVLLM.load(folder, dtype=dtype, options=options), device)
            warm_s, _ = timed(lambda: generate_vllm(backend, warm_items, warm_lengths, 0, method), device)
            seconds, tokens["vllm"] = timed(lambda: generate_vllm(backend, items, lengths, args.vllm_batch_size,
                                                                  method), device)
            backend.close()  # its processes stop: nothing of it runs beside transformers
            result["engines"]["vllm"] = {**engine_figures("vllm", load_s, warm_s, seconds, lengths),
                                         "options": {k: v for k, v in asdict(options).items() if v is not None}}
        else:
            load_s, backend = timed(lambda: load_hf(folder, dtype, device), device)
            warm_s, _ = timed(lambda: generate_hf(backend, warm_items, warm_lengths, batch_size, method), device)
            seconds, tokens["hf"] = timed(lambda: generate_hf(backend, items, lengths, batch_size, method), device)
            slots = sum(len(rows) * max(lengths[i] for i in rows) for rows in batches(n, batch_size))
            result["engines"]["hf"] = {**engine_figures("hf", load_s, warm_s, seconds, lengths, slots),
                                       "threads": torch.get_num_threads()}
            del backend
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        if any(len(t) != length for t, length in zip(tokens[engine], lengths)):
            raise SystemExit(f"error: {engine} did not generate the lengths asked")
        print(json.dumps({k: v for k, v in result["engines"][engine].items() if k != "options"}), flush=True)
        save()
    result["machine"] = machine(device)  # with vLLM's version, now that it is imported
    if len(tokens) == 2:
        result["answers"] = compare_answers(tokens["hf"], tokens["vllm"])
        result["ratios"] = {key: result["engines"]["vllm"][key] / result["engines"]["hf"][key]
                            for key in ("load_s", "items_per_s", "tokens_per_s")}
    save()
    print_table(result)
    workdir.cleanup()
    return result


def vllm_defaults(args, device: str, items: list, largest: int, folder: Path) -> dict[str, str]:
    """What the run sets unless --vllm-option says otherwise: a context just long enough (its KV cache must hold
    one whole sequence), the concurrency asked, and on a GPU room for this process's own CUDA context."""
    from functional_heads.models.loading import load_processor, prompt_inputs

    processor = load_processor(folder)
    longest = max(prompt_inputs(processor, [image], [prompt])["input_ids"].shape[1] for prompt, image in items[:64])
    options = {"max_model_len": str(longest + largest + 16)}
    if args.max_num_seqs:
        options["max_num_seqs"] = str(args.max_num_seqs)
    if device.startswith("cuda"):
        options["gpu_memory_utilization"] = "0.8"
    return options


def machine(device: str) -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "vllm": sys.modules["vllm"].__version__ if "vllm" in sys.modules else None,
            "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
            or platform.machine(), "cpus": os.cpu_count(),
            "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")}


def print_table(result: dict) -> None:
    lengths = result["lengths"]
    print(f"\n{result['items']} items ({result['size']} model, {result['dtype']} on {result['machine']['device']}), "
          f"greedy, output lengths log-normal: median {lengths['median']}, spread {lengths['spread']}, from "
          f"{lengths['min']} to {lengths['max']} (drawn: {lengths['drawn_min']} to {lengths['drawn_max']}, "
          f"{lengths['total']} tokens); "
          f"transformers in batches of {result['batch_size']}, vLLM given {result['vllm_batch_size']} per call")
    print("| engine | start-up s (load + warm-up) | items/s | generated tokens/s | transformers' token slots used |\n"
          "|---|---|---|---|---|")
    names = {"hf": "transformers (--engine hf)", "vllm": "vLLM (--engine vllm)"}
    for key, row in result["engines"].items():
        used = f"{row['slots_used']:.0%}" if "slots_used" in row else ""
        print(f"| {names[key]} | {row['load_s']:.1f} + {row['warmup_s']:.1f} | {row['items_per_s']:.2f} | "
              f"{row['tokens_per_s']:.0f} | {used} |")
    if "ratios" in result:
        ratios, answers = result["ratios"], result["answers"]
        print(f"| vLLM / transformers | {ratios['load_s']:.2f} (load) | {ratios['items_per_s']:.2f} | "
              f"{ratios['tokens_per_s']:.2f} | |")
        parted = "" if not answers["differ"] else (
            f"; the others part at token {answers['first_difference_median']:g} (median), "
            f"{answers['first_difference_share_median']:.0%} of the way")
        print(f"\nAnswers: {answers['identical']} of {answers['items']} token sequences identical, "
              f"{answers['differ']} differ{parted}.")


if __name__ == "__main__":
    main()
