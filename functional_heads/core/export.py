"""A folded checkpoint: the head map's gains baked into the o_proj weights, saved as a plain HF folder.

The folder loads with `AutoModelForImageTextToText.from_pretrained` and no functional_heads import, and
gives the rescaled outputs at no cost. Processor, tokenizer and chat template files travel unchanged; the
files functional-heads writes beside a model (settings, head maps, tuning results) do not, since they
describe the unfolded model. The head map is kept as `functional_heads.json`, and config.json records the
folded gains under `functional_heads_folded`, so that rescaling the export again (which would compound the
gains) is refused or warned about, and `fheads check` says what it is.

The export is written into a new hidden folder beside `out` and renamed into place when complete: a failed
export (a full disk, Ctrl-C) leaves `out` as it was, and an existing `out` is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..models.compat import readable_by_transformers_4
from ..models.loading import WEIGHT_SUFFIXES, load_model, local_folder, read_config
from ..utils.errors import UserError
from ..utils.files import atomic_folder, check_new_folder
from ..utils.progress import library_bars
from .heads import FOLDED_KEY, HEAD_MAP_FILE, HeadMap, check_not_folded, folded_export, warn_if_inert
from .rescale import fold

_WRITTEN_BY_SAVE = ("config.json", "generation_config.json", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json")
# what functional-heads writes beside a model (`fheads tune`, the bundled models, an earlier export): it
# describes the unfolded model, so it does not travel into the folded one
_OWN_FILES = (HEAD_MAP_FILE, "settings.json", "candidate.json", "heads.json", "tune.json", "tune.md")


def export_folded(model: str | Path, heads: HeadMap | str | Path, out: str | Path,
                  dtype: str | torch.dtype = "auto", *, overwrite: bool = False,
                  allow_folded: bool = False) -> Path:
    """Fold `heads` into the model of the folder `model` and save it as the new folder `out`; returns `out`.

    `out` must not exist or be an empty folder; with `overwrite`, an existing folder is replaced as a whole
    once the new one is complete. A source that is itself a folded export is refused unless `allow_folded`
    (the gains would compound). Everything is checked before the model loads."""
    source, out = local_folder(model), Path(out)
    head_map = heads if isinstance(heads, HeadMap) else HeadMap.load(heads)
    head_map.check_fits_config(source)
    _check_target(source, out, overwrite)
    check_not_folded(source, allow_folded, "folding gains into it again")
    warn_if_inert(head_map.inert_warning())
    try:
        with atomic_folder(out, overwrite) as folder:
            _write(source, head_map, folder, dtype)
    except OSError as err:  # a full disk, a lost mount: nothing half-written is left behind
        raise UserError(f"Could not write the export to {out} ({err}); {out} is left as it was.") from err
    return out


def _check_target(source: Path, out: Path, overwrite: bool) -> None:
    target, model = Path(os.path.abspath(out)), source.resolve()
    if out.exists() and out.resolve() == model:
        raise UserError(f"--out {out} is the model's own folder; export to a new folder.")
    if overwrite and out.is_dir() and (out.resolve() in model.parents or out.resolve() in Path.cwd().parents
                                       or out.resolve() == Path.cwd()):
        raise UserError(f"--out {out} holds the model being exported or the current folder; replacing it would "
                        "delete them: choose another folder.")
    if target.name in ("", ".", ".."):
        raise UserError(f"--out {out} names no folder: give the path of a new folder.")
    check_new_folder(out, overwrite)


def _write(source: Path, head_map: HeadMap, folder: Path, dtype) -> None:
    original = read_config(source)
    vlm = load_model(source, dtype=dtype)
    fold(vlm, head_map)
    with library_bars():  # no "Writing model shards" bar in a log
        vlm.save_pretrained(folder)
    for file in source.iterdir():  # processor, tokenizer and chat template travel unchanged
        if file.is_file() and file.name not in _WRITTEN_BY_SAVE + _OWN_FILES and file.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(file, folder / file.name)
    config = json.loads((folder / "config.json").read_text())
    _keep_config_keys(original, config)
    config[FOLDED_KEY] = _folded_record(head_map, folded_export(source))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    readable_by_transformers_4(folder)
    head_map.save(folder / HEAD_MAP_FILE)


def _folded_record(head_map: HeadMap, previous: dict | None) -> dict:
    """What config.json says about the folded gains (the whole map is in functional_heads.json)."""
    cfg = head_map.config
    gains = {"layer_gains": list(cfg.layer_gains)} if cfg.layer_gains is not None else \
        {"g_perc": cfg.g_perc, "g_reas": cfg.g_reas}
    record = {"head_map": HEAD_MAP_FILE, "gains": gains, "heads_scaled": int((head_map.gains != 1).sum())}
    if previous is not None:  # exported again from an export (allow_folded): the gains compound
        record["previous"] = previous
    return record


def _keep_config_keys(original: dict, written: dict) -> None:
    """Put back the keys of the original config.json that saving dropped (e.g. the `rope_scaling` that
    transformers 4.57 reads beside 5.x's `rope_parameters`), at any depth; written values stay."""
    for key, value in original.items():
        if key not in written:
            written[key] = value
        elif isinstance(value, dict) and isinstance(written[key], dict):
            _keep_config_keys(value, written[key])
