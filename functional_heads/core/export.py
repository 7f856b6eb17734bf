"""A folded checkpoint: the head map's gains baked into the o_proj weights, saved as a plain HF folder.

The folder loads with `AutoModelForImageTextToText.from_pretrained` and no functional_heads import, and
gives the rescaled outputs at no cost. Processor, tokenizer and chat template files travel unchanged; the
head map is kept beside the weights as `functional_heads.json`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..models.compat import readable_by_transformers_4
from ..models.loading import WEIGHT_SUFFIXES, load_model, local_folder, read_config
from ..utils.errors import UserError
from ..utils.progress import library_bars
from .heads import HeadMap
from .rescale import fold

HEAD_MAP_FILE = "functional_heads.json"
_WRITTEN_BY_SAVE = ("config.json", "generation_config.json", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json")


def export_folded(model: str | Path, heads: HeadMap | str | Path, out: str | Path,
                  dtype: str | torch.dtype = "auto") -> Path:
    """Fold `heads` into the model of the folder `model` and save it to `out`; returns `out`."""
    source, out = local_folder(model), Path(out)
    head_map = heads if isinstance(heads, HeadMap) else HeadMap.load(heads)
    head_map.check_fits_config(source)
    if out.resolve() == source.resolve():
        raise UserError(f"--out {out} is the model's own folder; export to a new folder.")
    vlm = load_model(source, dtype=dtype)
    fold(vlm, head_map)
    with library_bars():  # no "Writing model shards" bar in a log
        vlm.save_pretrained(out)
    for file in source.iterdir():  # processor, tokenizer and chat template travel unchanged
        if file.is_file() and file.name not in _WRITTEN_BY_SAVE and file.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(file, out / file.name)
    _keep_config_keys(read_config(source), out / "config.json")
    readable_by_transformers_4(out)
    head_map.save(out / HEAD_MAP_FILE)
    return out


def _keep_config_keys(original: dict, written: Path) -> None:
    """Put back the keys of the original config.json that saving dropped (e.g. the `rope_scaling` that
    transformers 4.57 reads beside 5.x's `rope_parameters`), at any depth; written values stay."""
    def merge(old: dict, new: dict) -> bool:
        changed = False
        for key, value in old.items():
            if key not in new:
                new[key], changed = value, True
            elif isinstance(value, dict) and isinstance(new[key], dict):
                changed = merge(value, new[key]) or changed
        return changed

    data = json.loads(written.read_text())
    if merge(original, data):
        written.write_text(json.dumps(data, indent=2) + "\n")
