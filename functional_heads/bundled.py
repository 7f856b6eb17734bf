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


def bundled_settings(model_path: str | Path | None = None) -> RescaleConfig:
    """The settings chosen on the dev split for this model (settings.json beside the weights)."""
    path = Path(model_path or BUNDLED) / "settings.json"
    if not path.is_file():
        raise FileNotFoundError(f"No settings.json in {path.parent}: run training/search_settings.py first.")
    return RescaleConfig.from_dict(json.loads(path.read_text())["config"])
