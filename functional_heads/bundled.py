"""The bundled model: a tiny Qwen2.5-VL reasoning model trained on the `shapes` benchmark (see its MODEL_CARD.md)."""

from __future__ import annotations

import json
from pathlib import Path

from .config import RescaleConfig

BUNDLED = Path(__file__).parent / "bundled" / "shapes-r1-tiny"


def bundled_model_path() -> Path:
    """Folder of the bundled model: load it with `fh.load_model` / `AutoModelForImageTextToText`."""
    if not (BUNDLED / "model.safetensors").is_file():
        raise FileNotFoundError(f"The bundled model is missing from {BUNDLED}; reinstall functional-heads.")
    return BUNDLED


def bundled_tuning(model_path: str | Path | None = None) -> dict:
    """settings.json beside the weights: what `fheads tune` wrote (the result, the study's best setting as
    `candidate`, its confirmation on held-out dev items)."""
    path = Path(model_path or BUNDLED) / "settings.json"
    if not path.is_file():
        raise FileNotFoundError(f"No settings.json in {path.parent}: run `fheads tune` on the model (see "
                                "training/tune_settings.sh) and copy its settings.json there.")
    return json.loads(path.read_text())


def bundled_settings(model_path: str | Path | None = None, candidate: bool = False) -> RescaleConfig:
    """The settings `fheads tune` chose on the dev split for this model: its result (vanilla's gains of 1 when
    nothing was confirmed), or with `candidate` the study's best setting whether confirmed or not."""
    tuning = bundled_tuning(model_path)
    return RescaleConfig.from_dict(tuning.get("candidate") if candidate and tuning.get("candidate") else tuning["config"])
