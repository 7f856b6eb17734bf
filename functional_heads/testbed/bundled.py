"""The bundled models: a tiny Qwen2.5-VL reasoning model trained on the `shapes` benchmark, and the same model
reasoning-tuned further; see each folder's MODEL_CARD.md."""

from __future__ import annotations

from pathlib import Path

from ..core.config import RescaleConfig
from ..utils.errors import UserError
from ..utils.files import read_json

BUNDLED = Path(__file__).parents[1] / "bundled" / "shapes-r1-tiny"
REASONING_TUNED = "shapes-r1-tiny-reasoning"  # the base, tuned further on long chains (training/reasoning_tune.py)


def bundled_model_path(name: str = BUNDLED.name) -> Path:
    """Folder of a bundled model (the base by default, or `REASONING_TUNED`): load it with `fh.load_model` /
    `AutoModelForImageTextToText`."""
    folder = BUNDLED.parent / name
    if not (folder / "model.safetensors").is_file():
        raise UserError(f"The bundled model is missing from {folder}; reinstall functional-heads.")
    return folder


def bundled_tuning(model_path: str | Path | None = None) -> dict:
    """settings.json beside the weights: what `fheads tune` wrote (the result, the study's best setting as
    `candidate`, its confirmation on held-out dev items)."""
    path = Path(model_path or BUNDLED) / "settings.json"
    if not path.is_file():
        raise UserError(f"No settings.json in {path.parent}: run `fheads tune` on the model (see "
                                "training/tune_settings.sh) and copy its settings.json there.")
    try:
        return read_json(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable settings file: {err}") from err


def bundled_settings(model_path: str | Path | None = None, candidate: bool = False) -> RescaleConfig:
    """The settings `fheads tune` chose on the dev split for this model: its result (vanilla's gains of 1 when
    nothing was confirmed), or with `candidate` the study's best setting whether confirmed or not."""
    tuning = bundled_tuning(model_path)
    path = Path(model_path or BUNDLED) / "settings.json"
    try:
        return RescaleConfig.from_dict(tuning.get("candidate") if candidate and tuning.get("candidate")
                                       else tuning["config"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # a UserError is a ValueError
        raise UserError(f"{path} does not hold valid settings: {err}") from err
