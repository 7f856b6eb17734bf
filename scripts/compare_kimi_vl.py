"""Compare our native loading of a Kimi-VL checkpoint with Moonshot's own remote code, on one prompt about a
generated image. Kimi-VL's remote code needs transformers 4.48 (it does not import under 4.57 or 5.x), so
the three steps run in two environments; scripts/compare_kimi_vl.sh runs them all:

    python scripts/compare_kimi_vl.py prepare WORK                  # this project's venv: image and prompt
    python scripts/compare_kimi_vl.py remote MODEL WORK             # a venv with transformers==4.48.2, tiktoken
    python scripts/compare_kimi_vl.py compare MODEL WORK            # this project's venv: our logits vs theirs

`remote` imports only torch, PIL and transformers (never functional_heads).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROMPT = "Look at the image carefully. What colour is the circle, and is it to the left of the square?"


def prepare(work: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from functional_heads.core.check import check_image

    work.mkdir(parents=True, exist_ok=True)
    check_image(448).save(work / "image.png")
    (work / "prompt.json").write_text(json.dumps({"prompt": PROMPT}))
    print(f"wrote {work}/image.png and prompt.json")


def remote(model_path: Path, work: Path, device: str, dtype: str) -> None:
    """Moonshot's code: its processor's inputs and its model's logits, saved for `compare`."""
    import torch
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=True, torch_dtype=getattr(torch, dtype),
                                                 device_map=device).eval()
    image = Image.open(work / "image.png").convert("RGB")
    prompt = json.loads((work / "prompt.json").read_text())["prompt"]
    messages = [{"role": "user", "content": [{"type": "image", "image": str(work / "image.png")},
                                             {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits.float().cpu()
    torch.save({"inputs": {k: torch.as_tensor(v) for k, v in inputs.items()}, "logits": logits, "text": text},
               work / "remote.pt")
    print(f"wrote {work}/remote.pt: logits {tuple(logits.shape)}")


def compare(model_path: Path, work: Path, device: str, dtype: str) -> dict:
    """Our model on Moonshot's exact inputs (logits), and our processor against theirs (inputs)."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import functional_heads as fh
    from functional_heads.models.loading import to_model_device

    saved = torch.load(work / "remote.pt")
    theirs = saved["inputs"]
    model = fh.load_model(model_path, dtype=getattr(torch, dtype), device_map=device)
    grid = torch.as_tensor(theirs["image_grid_hws"]).long()
    inputs = {"input_ids": theirs["input_ids"], "attention_mask": theirs["attention_mask"],
              "pixel_values": theirs["pixel_values"],
              "image_grid_thw": torch.cat([torch.ones(len(grid), 1, dtype=torch.long), grid], 1)}
    with torch.no_grad():
        ours = model(**to_model_device(inputs, model)).logits.float().cpu()
    reference = saved["logits"]
    processor = fh.load_processor(model_path, trust_remote_code=True)
    mine = processor(images=[[Image.open(work / "image.png").convert("RGB")]], text=[saved["text"]],
                     return_tensors="pt")
    result = {
        "logits_max_abs_diff": (ours - reference).abs().max().item(),
        "logits_max_abs": reference.abs().max().item(),
        "top1_agreement": (ours.argmax(-1) == reference.argmax(-1)).float().mean().item(),
        "processor_same_input_ids": torch.equal(mine["input_ids"], torch.as_tensor(theirs["input_ids"])),
        "processor_pixel_max_abs_diff": (mine["pixel_values"] - theirs["pixel_values"]).abs().max().item()
        if mine["pixel_values"].shape == theirs["pixel_values"].shape else None,
    }
    print(json.dumps(result, indent=1))
    (work / "comparison.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare").add_argument("work", type=Path)
    for step in ("remote", "compare"):
        command = sub.add_parser(step)
        command.add_argument("model", type=Path)
        command.add_argument("work", type=Path)
        command.add_argument("--device", default=None, help="a device_map: cuda:0 or auto (default: the CPU)")
        command.add_argument("--dtype", default="float32", help="float32 (exact comparison) or bfloat16")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.work)
    else:
        {"remote": remote, "compare": compare}[args.step](args.model, args.work, args.device, args.dtype)


if __name__ == "__main__":
    main()
