"""The architecture table, measured: for every image-text family the installed transformers registers, build
a tiny random-weight model from its config class (functional_heads.families), run the checks of
`fheads check` on it (S_v against eager attention, padded batch against single prompts, rescaling, fold
against hooks) and write the table into docs/reference/architectures.md (between its architecture-matrix
markers) and docs/architectures.json. Rerun it when transformers changes:

    .venv/bin/python scripts/architecture_matrix.py            # all families: 2 min 38 s, 8 GB peak, 2 cores
    .venv/bin/python scripts/architecture_matrix.py qwen2_5_vl kimi_k25 --no-write   # a few, print only
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

from functional_heads.core.check import check_model  # noqa: E402
from functional_heads.testbed.families import bug_worked_around, families, known_bug, tiny_config, tiny_family  # noqa: E402

START, END = "<!-- architecture-matrix:start -->", "<!-- architecture-matrix:end -->"
PAGE = ROOT / "docs" / "reference" / "architectures.md"  # the docs page that holds the table

# Checkpoints users run, by model_type (names as published; nothing here is downloaded).
EXAMPLES = {
    "qwen2_vl": "Qwen2-VL, QVQ-72B-Preview",
    "qwen2_5_vl": "Qwen2.5-VL, Ocean-R1, R1-Onevision, MiMo-VL, MM-Eureka, VL-Rethinker",
    "qwen3_vl": "Qwen3-VL (Instruct, Thinking)",
    "qwen3_vl_moe": "Qwen3-VL-30B-A3B-Thinking, Qwen3-VL-235B-A22B-Thinking",
    "qwen3_5": "Qwen3.5", "qwen3_5_moe": "Qwen3.5 MoE",
    "qwen2_5_omni_thinker": "Qwen2.5-Omni (thinker)", "qwen3_omni_moe_thinker": "Qwen3-Omni-Thinking",
    "glm4v": "GLM-4.1V-9B-Thinking", "glm4v_moe": "GLM-4.5V", "glm46v": "GLM-4.6V",
    "internvl": "InternVL3, InternVL3.5", "mistral3": "Mistral Small 3.1/3.2, Magistral Small 1.2",
    "ernie4_5_vl_moe": "ERNIE-4.5-VL-28B-A3B-Thinking", "kimi_k25": "Kimi-K2.5; Kimi-VL-A3B-Thinking via fh.load_model",
    "llama4": "Llama 4 Scout, Maverick", "mllama": "Llama 3.2 Vision",
    "llava": "LLaVA-1.5", "llava_next": "LLaVA-NeXT", "llava_onevision": "LLaVA-OneVision",
    "llava_next_video": "LLaVA-NeXT-Video", "video_llava": "Video-LLaVA", "vipllava": "ViP-LLaVA",
    "gemma3": "Gemma 3", "gemma3n": "Gemma 3n", "gemma4": "Gemma 4", "shieldgemma2": "ShieldGemma 2", "paligemma": "PaliGemma 2",
    "idefics2": "Idefics2", "idefics3": "Idefics3", "smolvlm": "SmolVLM, SmolVLM2",
    "deepseek_vl": "DeepSeek-VL", "deepseek_vl_hybrid": "DeepSeek-VL (hybrid)", "janus": "Janus-Pro",
    "aya_vision": "Aya Vision", "cohere2_vision": "Command A Vision", "phi4_multimodal": "Phi-4-multimodal",
    "ovis2": "Ovis2", "got_ocr2": "GOT-OCR 2.0", "paddleocr_vl": "PaddleOCR-VL", "lfm2_vl": "LFM2-VL",
    "molmo2": "Molmo 2", "perception_lm": "PerceptionLM", "fuyu": "Fuyu", "chameleon": "Chameleon",
    "emu3": "Emu3", "florence2": "Florence-2", "blip-2": "BLIP-2", "instructblip": "InstructBLIP",
    "kosmos-2": "Kosmos-2", "pix2struct": "Pix2Struct", "idefics": "IDEFICS", "git": "GIT",
}


# Where reading the model's code shows the method itself does not apply (the rest of the reasons are found
# by the script from the model's config or from the error it met).
REASONS = {
    "mllama": "images enter through cross-attention layers, not as tokens of the sequence: no S_v to measure",
    "idefics": "images enter through gated cross-attention layers, not as tokens of the sequence: no S_v to measure",
    "blip": "a captioner whose text decoder cross-attends to the image: no image tokens in its sequence",
}


def reason(model_type: str, result: dict) -> str:
    """Why a family was not checked, in the words a user needs: does not apply, cannot be checked here, or the
    script could not build it (then `fheads check` on a real checkpoint is the way to know)."""
    error = result["error"]
    if model_type in REASONS:
        return f"does not apply: {REASONS[model_type]}"
    try:
        if tiny_config(model_type).is_encoder_decoder:
            return ("does not apply: an encoder-decoder, whose decoder reads the image through cross-attention "
                    "(S_v is defined on decoder self-attention over image tokens)")
    except Exception:
        pass
    if error.startswith(("ImportError", "ModuleNotFoundError")):
        missing = re.search(r"requires the (\S+) library|No module named '([^']+)'", error)
        name = next((g for g in missing.groups() if g), "a package") if missing else "a package"
        return f"not checkable here: needs {name}, not installed on this machine"
    if "needs torchvision" in error:
        return "not checkable here: its image processor needs torchvision, which does not import beside this torch"
    if "No attention was recorded" in error:
        return ("S_v cannot be probed: its decoder attention does not go through transformers' AttentionInterface "
                "(rescaling and folding may still work)")
    if "does not know the layout" in error:
        return "layout not in the table: could not find" + error.split("Could not find", 1)[-1]
    return (f"the script could not {result['failed_step']} ({error}); a real checkpoint may still work: "
            "`fheads check --model PATH` says")


def measure(model_type: str) -> dict:
    """One row: what was measured, or at which step and why the tiny model could not be checked."""
    start, step = time.perf_counter(), "build a tiny model"
    try:
        with warnings.catch_warnings(), bug_worked_around(model_type):
            warnings.simplefilter("ignore")
            family = tiny_family(model_type)
            step = "check"
            result = check_model(family.model, family.batch, family.rows).to_dict()
        return {**result, "tokens_per_image": family.tokens_per_image}
    except Exception as err:  # a row says why; the matrix goes on
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        return {"model_type": model_type, "failed_step": step, "error": f"{type(err).__name__}: {reason}",
                "seconds": time.perf_counter() - start}
    finally:
        gc.collect()  # one family's model at a time


def yes_no(flag) -> str:
    return {True: "yes", False: "**no**", None: "not checked"}[flag]


def row(model_type: str, result: dict) -> str:
    notes = []
    bug = known_bug(model_type)
    if bug:
        notes.append(f"transformers {transformers.__version__} bug: {bug}; checked with the field patched over")
    if "error" in result:
        notes.append(reason(model_type, result))
        sv, rescale = None, None
    else:
        sv, rescale = result["sv_exact"], result["rescale_works"]
        if result["padding_effect"] > result["tolerance"]:
            notes.append(f"the model's own logits change with left padding ({result['padding_effect']:.0e}): "
                         "exact at batch size 1")
        notes.append(f"S_v diff {result['sv_vs_eager']:.0e}, batch {result['batch_vs_single']:.0e}, "
                     f"fold {result['fold_vs_hooks']:.0e}")
    text = "; ".join(notes).replace("|", "/")
    return f"| `{model_type}` | {EXAMPLES.get(model_type, '')} | {yes_no(sv)} | {yes_no(rescale)} | {text} |"


def table(results: dict[str, dict]) -> str:
    works = sum(r.get("ok", False) for r in results.values())
    head = (f"Measured by `scripts/architecture_matrix.py` on transformers {transformers.__version__}, torch "
            f"{torch.__version__.split('+')[0]}: {works} of {len(results)} families pass every check.\n\n"
            "| model type | examples | S_v exact? | rescale / fold? | notes |\n|---|---|---|---|---|")
    return "\n".join([head] + [row(t, r) for t, r in results.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("families", nargs="*", help="model types (default: every registered family)")
    parser.add_argument("--no-write", action="store_true", help="print the table; leave the docs alone")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    chosen = args.families or list(families())
    unknown = sorted(set(chosen) - set(families()))
    if unknown:
        sys.exit(f"error: not image-text families of transformers {transformers.__version__}: {', '.join(unknown)}")
    results = {}
    for number, model_type in enumerate(chosen, 1):
        results[model_type] = measure(model_type)
        status = "ok" if results[model_type].get("ok") else results[model_type].get("failed_step", "FAIL")
        print(f"[{number}/{len(chosen)}] {model_type}: {status} ({results[model_type]['seconds']:.1f} s)",
              file=sys.stderr, flush=True)
    text = table(results)
    if args.no_write:
        print(text)
        return
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "architectures.json").write_text(json.dumps(
        {"transformers": transformers.__version__, "torch": torch.__version__, "families": results}, indent=1) + "\n")
    page = PAGE.read_text()
    if START not in page or END not in page:
        sys.exit(f"error: {PAGE.relative_to(ROOT)} has no {START} ... {END} markers to write the table between.")
    before, rest = page.split(START, 1)
    PAGE.write_text(before + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    print(f"wrote {PAGE.relative_to(ROOT)} and docs/architectures.json: {len(results)} families", file=sys.stderr)


if __name__ == "__main__":
    main()
