"""Functional head identification: which heads are perception heads and which are reasoning heads."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import torch
from PIL import Image

from ..models.architectures import ModelLayout, attention_layer_count, locate
from ..models.loading import (
    check_image_input,
    load_model,
    load_processor,
    prompt_batches,
    read_config,
    read_prompts,
    to_model_device,
)
from ..utils.errors import FunctionalHeadsWarning, UnusableImage, UserError
from ..utils.files import atomic_write_text, read_json
from ..utils.images import read_image
from ..utils.progress import progress as progress_lines
from .config import RescaleConfig
from .ratios import visual_attention_ratios

FORMAT_VERSION = 1
PAPER_BEST_SHARE = 0.064  # of all heads (METHOD.md: about 6.4% best, 18% degrades)
UNUSUAL_SHARE = 2 * PAPER_BEST_SHARE  # more than this deserves a second look at the thresholds
MIN_USABLE_SHARE = 0.5  # calibration refuses when fewer of the items it looked at have an image the model takes


class UnusualShareWarning(FunctionalHeadsWarning):
    """A static head map selects more than UNUSUAL_SHARE of all heads."""
HEAD_MAP_FILE = "functional_heads.json"  # the head map an export folded in, beside its weights
FOLDED_KEY = "functional_heads_folded"  # config.json record of the gains an export folded into the weights


@dataclass
class HeadMap:
    """Perception and reasoning heads of one model, and the gains they get.

    Masks are bool [layers, heads] for a static map, or [batch, layers, heads] for per-input maps.
    `ratios` holds the S_v they were picked from (the calibration mean for a static map).
    """

    perception: torch.Tensor
    reasoning: torch.Tensor
    config: RescaleConfig
    model_type: str | None = None
    ratios: torch.Tensor | None = None
    num_samples: int | None = None

    def __post_init__(self):
        masks = (self.perception, self.reasoning)
        if not all(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks):
            raise UserError("perception and reasoning must be bool tensors (masks of the selected heads).")
        if self.perception.shape != self.reasoning.shape or self.perception.dim() not in (2, 3):
            raise UserError(f"perception {tuple(self.perception.shape)} and reasoning {tuple(self.reasoning.shape)} "
                            "must be masks of one shape, [layers, heads] or [batch, layers, heads].")
        both = (self.perception & self.reasoning).nonzero()
        if len(both):
            *batch, layer, head = both[0].tolist()
            raise UserError(f"head {head} of layer {layer}{f' (input {batch[0]})' if batch else ''} is listed as both "
                            "a perception and a reasoning head; a head has one class.")
        gains = self.config.layer_gains
        if gains is not None and len(gains) != self.num_layers:
            raise UserError(f"layer_gains holds {len(gains)} gains but the map has {self.num_layers} layers: give one "
                            "gain per layer.")

    @property
    def num_layers(self) -> int:
        return self.perception.shape[-2]

    @property
    def num_heads(self) -> int:
        return self.perception.shape[-1]

    @property
    def gains(self) -> torch.Tensor:
        """float32 gains, shaped like the masks: g_perc, g_reas (or the layer's gain of `layer_gains`) or 1."""
        gains = torch.ones(self.perception.shape)
        if self.config.layer_gains is not None:
            per_layer = torch.tensor(self.config.layer_gains, dtype=torch.float32)[:, None].expand(self.perception.shape)
            selected = self.perception | self.reasoning
            gains[selected] = per_layer[selected]
            return gains
        gains[self.perception] = self.config.g_perc
        gains[self.reasoning] = self.config.g_reas
        return gains

    def only(self, kind: str) -> "HeadMap":
        """The map with only its `kind` ("perception" or "reasoning") heads: the ablations of the paper."""
        if kind not in ("perception", "reasoning"):
            raise UserError(f"kind must be 'perception' or 'reasoning', got {kind!r}.")
        none = torch.zeros_like(self.perception)
        masks = (self.perception, none) if kind == "perception" else (none, self.reasoning)
        return HeadMap(*masks, self.config, self.model_type, self.ratios, self.num_samples)

    @property
    def share_selected(self) -> float:
        return (self.perception | self.reasoning).float().mean().item()

    def inert_reason(self) -> str | None:
        """Why rescaling with this map changes nothing (it selects no head, or every selected head's gain is
        1), or None."""
        if not (self.perception | self.reasoning).any():
            return "it selects no head (loosen tau_perc / tau_reas)"
        if bool((self.gains == 1).all()):
            return self.config.inert_reason() or "every selected head's gain is 1"
        return None

    def inert_warning(self, name: str = "the head map") -> str | None:
        """One line saying that rescaling with this map changes nothing, and why; None if it changes something."""
        reason = self.inert_reason()
        return None if reason is None else f"{name} changes nothing: {reason}, so rescaled runs equal vanilla."

    def share_warning(self) -> str | None:
        """A warning when the map selects an unusual share of heads: the paper found about 6% best and 18%
        harmful, so more than twice its best (UNUSUAL_SHARE) deserves a second look at the thresholds (none
        at all: `inert_warning`)."""
        share = self.share_selected
        if share > UNUSUAL_SHARE:
            return (f"the map selects {share:.0%} of all heads; the paper found about 6% best and 18% harmful. "
                    "Tighten tau_perc / tau_reas (or the layer bands) unless this is intended.")
        return None

    def per_layer_counts(self) -> list[tuple[int, int]]:
        """(perception, reasoning) head counts per layer of a static map."""
        self._require_static("per_layer_counts")
        return list(zip(self.perception.sum(-1).tolist(), self.reasoning.sum(-1).tolist()))

    def check_fits(self, layout: ModelLayout) -> None:
        if (self.num_layers, self.num_heads) != (layout.num_layers, layout.num_heads):
            raise UserError(f"This head map was made for a model of {self.num_layers} layers x {self.num_heads} "
                            f"heads ({self.model_type or 'unknown type'}), but the model has {layout.num_layers} "
                            f"layers x {layout.num_heads} heads ({layout.model_type}). Calibrate on this model.")

    def check_fits_config(self, model_path: str | Path) -> None:
        """Raise before loading weights if the model folder's config gives another number of layers or
        heads (where the config names them: num_hidden_layers, num_attention_heads)."""
        config = read_config(model_path)
        text = config.get("text_config") or config
        shape = (attention_layer_count(text), text.get("num_attention_heads"))
        if all(isinstance(n, int) for n in shape) and shape != (self.num_layers, self.num_heads):
            raise UserError(f"This head map was made for a model of {self.num_layers} layers x {self.num_heads} "
                            f"heads ({self.model_type or 'unknown type'}), but {model_path} has {shape[0]} layers "
                            f"x {shape[1]} heads. Calibrate on this model.")

    def save(self, path: str | Path) -> None:
        """Write the map as JSON: the heads, the config, the mean S_v, the model type and shape (static maps
        only)."""
        self._require_static("save")
        data = {"format_version": FORMAT_VERSION, "model_type": self.model_type, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "config": self.config.to_dict(), "num_samples": self.num_samples,
                "perception_heads": self.perception.nonzero().tolist(),
                "reasoning_heads": self.reasoning.nonzero().tolist(),
                "ratios": None if self.ratios is None else [[round(v, 6) for v in row] for row in self.ratios.tolist()]}
        if self.ratios is not None and not torch.isfinite(self.ratios).all():
            raise UserError("the head map's S_v ratios are not all finite numbers (the model's attention gave NaN "
                            "or inf): check the model in float32 with `fheads check`.")
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")  # whole or not at all, its folder made

    @classmethod
    def load(cls, path: str | Path) -> "HeadMap":
        """Read a map that `save` (or `fheads calibrate`, `fheads tune`) wrote."""
        try:
            data = read_json(path)
            shape = (data["num_layers"], data["num_heads"])
            masks = [torch.zeros(shape, dtype=torch.bool) for _ in range(2)]
            for mask, key in zip(masks, ("perception_heads", "reasoning_heads")):
                for layer, head in data[key]:
                    mask[layer, head] = True
            ratios = torch.tensor(data["ratios"]) if data.get("ratios") is not None else None
            if ratios is not None and tuple(ratios.shape) != shape:
                raise UserError(f"its ratios are {list(ratios.shape)}, not the stated {list(shape)} layers x heads")
            if any(not 0 <= n < limit for heads in (data["perception_heads"], data["reasoning_heads"])
                   for pair in heads for n, limit in zip(pair, shape)):
                raise UserError(f"a listed head lies outside the stated {shape[0]} layers x {shape[1]} heads")
            return cls(masks[0], masks[1], RescaleConfig.from_dict(data["config"]), data.get("model_type"), ratios,
                       data.get("num_samples"))
        except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
            raise UserError(f"{path} is not a readable functional-heads head map: {err}") from err

    def _require_static(self, what: str) -> None:
        if self.perception.dim() != 2:
            raise UserError(f"{what} needs a static head map [layers, heads]; this one is per input "
                            f"{tuple(self.perception.shape)}.")


def identify_heads(ratios: torch.Tensor, config: RescaleConfig, model_type: str | None = None,
                   warn: bool = True) -> HeadMap:
    """Apply the rules of the paper to S_v [layers, heads] or [batch, layers, heads]. A static map that
    selects more than UNUSUAL_SHARE of all heads gives an `UnusualShareWarning` (one line, with the share),
    unless `warn` is off (a tuning study draws such maps on purpose)."""
    if ratios.dim() not in (2, 3):
        raise UserError(f"ratios must be [layers, heads] or [batch, layers, heads], got {tuple(ratios.shape)}.")
    config.check_layers(ratios.shape[-2])
    perception, reasoning = classify(ratios, torch.arange(ratios.shape[-2])[:, None], config)
    heads = HeadMap(perception, reasoning, config, model_type, ratios)
    if warn and ratios.dim() == 2 and heads.share_selected > UNUSUAL_SHARE:
        warnings.warn(heads.share_warning(), UnusualShareWarning, stacklevel=2)
    return heads


def thresholds_for_shares(ratios: torch.Tensor, perc_last_layer: int, reas_first_layer: int, perc_share: float,
                          reas_share: float) -> tuple[float, float]:
    """(tau_perc, tau_reas) that select about `perc_share` and `reas_share` of all heads of a static S_v
    [layers, heads]: the top S_v values of the perception band and the bottom ones of the reasoning band (the
    paper's natural knob is the share of heads: about 6% best, 18% harmful). A share of 0 selects none."""
    total = ratios.numel()

    def kth(band: torch.Tensor, share: float, largest: bool) -> float | None:
        k = min(round(share * total), band.numel())
        return None if k == 0 else band.flatten().topk(k, largest=largest).values[-1].item()

    tau_perc = kth(ratios[:perc_last_layer + 1], perc_share, largest=True)
    tau_reas = kth(ratios[reas_first_layer:], reas_share, largest=False)
    return (1.0 if tau_perc is None else tau_perc, 0.0 if tau_reas is None else tau_reas)


def dose_matched(config: RescaleConfig, source_ratios: torch.Tensor, target_ratios: torch.Tensor) -> RescaleConfig:
    """`config` moved to another model at the same dose: the thresholds that select, in the same layer bands
    of the model with static S_v `target_ratios` [layers, heads], the same share of heads of each class as
    `config` selects on `source_ratios`. Absolute thresholds carried across models select an arbitrary
    share (a control that selects no head cannot tell harmless from nothing done)."""
    if source_ratios.shape != target_ratios.shape:
        raise UserError(f"dose matching needs models of one shape: S_v {tuple(source_ratios.shape)} against "
                        f"{tuple(target_ratios.shape)}.")
    perception, reasoning = classify(source_ratios, torch.arange(source_ratios.shape[0])[:, None], config)
    total = source_ratios.numel()
    tau_perc, tau_reas = thresholds_for_shares(target_ratios, config.perc_last_layer, config.reas_first_layer,
                                               perception.sum().item() / total, reasoning.sum().item() / total)
    return replace(config, tau_perc=tau_perc, tau_reas=tau_reas)


def classify(ratios: torch.Tensor, layer: torch.Tensor | int, config: RescaleConfig):
    """(perception, reasoning) masks of heads with ratios S_v in `layer` (broadcast against ratios)."""
    layer = torch.as_tensor(layer)
    perception = (layer <= config.perc_last_layer) & (ratios >= config.tau_perc)
    reasoning = (layer >= config.reas_first_layer) & (ratios <= config.tau_reas)
    return perception, reasoning


def calibrate(model, batches: Iterable[dict], config: RescaleConfig, progress: bool = False,
              total: int | None = None) -> HeadMap:
    """Static head map from the mean S_v over a calibration set (an iterable of processor outputs;
    `total` batches, if known, for the progress bar)."""
    layout = locate(model)
    ratio_sum, count = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64), 0
    with progress_lines("calibrating", total or 0, unit="batches", enabled=progress and bool(total)) as advance:
        for inputs in batches:
            ratios = visual_attention_ratios(model, inputs, **config.probe_options())
            ratio_sum += ratios.double().sum(0)
            count += ratios.shape[0]
            advance(1)
    if count == 0:
        raise UserError("calibrate got no calibration batches.")
    heads = identify_heads((ratio_sum / count).float(), config, layout.model_type)
    heads.num_samples = count
    return heads


@dataclass(frozen=True)
class CalibrationItem:
    """One calibration prompt: where it comes from (file:line or a benchmark item, for messages), its text, and
    how to read its image (`image()`, raising `UnusableImage` naming it)."""

    where: str
    prompt: str
    image: Callable[[], Image.Image]
    image_name: str


def file_calibration_items(path: str | Path) -> list[CalibrationItem]:
    """The rows of a prompts file (`read_prompts`: JSONL of {"image", "prompt"}) as calibration items."""
    return [CalibrationItem(row["where"], row["prompt"], lambda image=row["image"]: read_image(image),
                            str(row["image"])) for row in read_prompts(path)]


def usable_calibration(processor, items: Iterable[CalibrationItem], limit: int | None = None,
                       warn: Callable[[str], None] | None = None, what: str = "calibration data"
                       ) -> list[CalibrationItem]:
    """The first `limit` items (all, without one) whose image can be read and that the model's processor takes
    with its prompt. The others are skipped and counted, with one warning (`warn`; by default a
    `FunctionalHeadsWarning`, which the CLI prints as one `warning:` line);
    if none is usable, or fewer than MIN_USABLE_SHARE of those looked at, it refuses: something is wrong with
    the data as a whole (a wrong folder, another format), not with one image."""
    usable, skipped = [], []
    for item in items:
        if limit is not None and len(usable) == limit:
            break
        try:
            image = item.image()
        except UnusableImage as err:
            skipped.append(f"{item.where}: {err}")
            continue
        try:
            check_image_input(processor, image, item.prompt)
        except UnusableImage as err:
            skipped.append(f"{item.where}: image {item.image_name}: {err}")
            continue
        usable.append(item)
    looked = len(usable) + len(skipped)
    if not usable or len(usable) < MIN_USABLE_SHARE * looked:
        raise UserError(f"{what}: {len(skipped)} of {looked} calibration items have no image the model can take "
                        f"(first: {skipped[0]}); fix or remove them." if skipped else
                        f"{what} holds no calibration item with an image: give other calibration data.")
    if skipped:
        message = (f"{what}: skipped {len(skipped)} of {looked} calibration items whose image the model cannot "
                   f"take (first: {skipped[0]}).")
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, FunctionalHeadsWarning, stacklevel=3)
    return usable


def calibrate_from_file(model_path: str | Path, data: str | Path, config: RescaleConfig, batch_size: int = 4,
                        limit: int | None = None, dtype: str = "auto", device_map: str | None = None,
                        progress: bool = True, allow_folded: bool = False,
                        warn: Callable[[str], None] | None = None) -> HeadMap:
    """`calibrate` on the prompts of a JSONL file ({"image", "prompt"} per line) with the model of a local
    folder, on its first `limit` usable rows. Every row, every image (read, and taken by the processor with its
    prompt) and the layer bounds are checked before the model loads; rows whose image the model cannot take
    are skipped with a warning (`usable_calibration`). A folder that `export_folded` wrote is refused unless
    `allow_folded` (its heads already carry gains). Warns (`FunctionalHeadsWarning`) when the map changes
    nothing."""
    check_not_folded(model_path, allow_folded, "calibrating it")
    items = file_calibration_items(data)
    processor = load_processor(model_path)
    chosen = usable_calibration(processor, items, limit, warn, str(data))
    model = load_model(model_path, dtype=dtype, device_map=device_map)
    config.check_layers(locate(model).num_layers)
    batches = prompt_batches(processor, [item.image for item in chosen], [item.prompt for item in chosen], batch_size)
    heads = calibrate(model, (to_model_device(b, model) for b in batches), config, progress=progress,
                      total=-(-len(chosen) // batch_size))
    warn_if_inert(heads.inert_warning())
    return heads


def warn_if_inert(message: str | None) -> None:
    """Warn (`FunctionalHeadsWarning`; the CLI prints it as one `warning:` line) that a map changes nothing."""
    if message:
        warnings.warn(message, FunctionalHeadsWarning, stacklevel=3)


def folded_export(model_path: str | Path) -> dict | None:
    """The record of the gains `export_folded` baked into this folder's weights, or None for a plain
    checkpoint. An export before the record existed is known by its head map file alone."""
    record = read_config(model_path).get(FOLDED_KEY)
    if record is None and (Path(model_path) / HEAD_MAP_FILE).is_file():
        record = {"head_map": HEAD_MAP_FILE}
    return record if record is None or isinstance(record, dict) else {"record": record}


def describe_folded(record: dict) -> str:
    """The gains of a folded record in words, e.g. "g_perc=1.5, g_reas=1.3 on 12 heads"."""
    gains = record.get("gains") or {}
    text = ", ".join(f"{k}={v}" for k, v in gains.items()) or f"the gains of its {record.get('head_map', 'head map')}"
    if "heads_scaled" in record:
        text += f" on {record['heads_scaled']} heads"
    if isinstance(record.get("previous"), dict):
        text += f", over an earlier fold of {describe_folded(record['previous'])}"
    return text


def check_not_folded(model_path: str | Path, allow: bool, doing: str) -> None:
    """Refuse a folder `export_folded` wrote, unless `allow`: rescaling its heads again multiplies the gains
    (1.5 folded then 1.5 again is 2.25)."""
    record = folded_export(model_path)
    if record is not None and not allow:
        raise UserError(f"{model_path} is a folded export (gains {describe_folded(record)} are already in its "
                        f"weights), so {doing} would compound them: use the original checkpoint, or pass "
                        "--allow-folded (allow_folded=True in Python) if that is intended.")
