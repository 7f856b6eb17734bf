"""Every difference between the transformers versions we support (4.57 and 5.x), in one place.

Named flags and small functions, as transformers does with its `is_torch_greater_or_equal` constants.
Code elsewhere asks these instead of reading `transformers.__version__` or a private attribute.
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import transformers
from packaging.version import Version

TRANSFORMERS_VERSION = Version(transformers.__version__)
IS_TRANSFORMERS_5 = TRANSFORMERS_VERSION.major >= 5

# ---------------------------------------------------------------- KV caches

CACHE_KEYS = ("cache", "past_key_values")


def cache_argument(model) -> str:
    """The keyword `model`'s forward (and so generate()) takes its KV cache by: `cache` in recent 5.x, and
    `past_key_values` in 4.x, early 5.x (5.19 still) and remote code written for those."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def passed_cache(kwargs: dict):
    """The KV cache a forward was called with, under either keyword (None if there is none)."""
    for key in CACHE_KEYS:
        if kwargs.get(key) is not None:
            return kwargs[key]
    return None


def returned_cache(output):
    """The KV cache a forward or `generate()` returned."""
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


# ---------------------------------------------------------------- model outputs and configs

def projected_features(output):
    """What `get_image_features` / `get_text_features` return: the features themselves in 4.x (a tensor,
    or a tuple per image), an output whose `pooler_output` holds them in 5.x."""
    return getattr(output, "pooler_output", output)


def rope_settings(rope: dict) -> dict:
    """Text-config keys for rotary settings {rope_type, rope_theta, ...}: `rope_parameters` in 5.x,
    `rope_scaling` and `rope_theta` in 4.x."""
    if IS_TRANSFORMERS_5:
        return {"rope_parameters": rope}
    return {"rope_scaling": {**rope, "type": rope["rope_type"]}, "rope_theta": rope["rope_theta"]}


def readable_by_transformers_4(folder: str | Path) -> None:
    """Add what transformers 4.57 needs to read a Qwen-VL folder written by 5.x, in forms 5.x reads alike:
    rotary settings also under their old name, the pixel budget also as min/max_pixels (4.57 would
    otherwise apply its own minimum and give the image more tokens), extra special tokens as a mapping.
    Changes nothing that the running version reads differently (tested)."""
    def update(name: str, change) -> None:
        path = Path(folder) / name
        if path.is_file():
            data = json.loads(path.read_text())
            if change(data):
                path.write_text(json.dumps(data, indent=2) + "\n")

    def rope(config: dict) -> bool:
        text = config.get("text_config", {})
        if "rope_parameters" not in text or "rope_scaling" in text:
            return False
        parameters = text["rope_parameters"]
        text["rope_scaling"] = {"type": parameters["rope_type"],
                                **{k: v for k, v in parameters.items() if k != "rope_theta"}}
        text["rope_theta"] = parameters["rope_theta"]
        return True

    def pixels(images: dict) -> bool:
        if "size" not in images or "min_pixels" in images:
            return False
        images.update(min_pixels=images["size"]["shortest_edge"], max_pixels=images["size"]["longest_edge"])
        return True

    def special_tokens(tokenizer: dict) -> bool:
        if tokenizer.get("extra_special_tokens") != []:
            return False
        tokenizer["extra_special_tokens"] = {}
        return True

    update("config.json", rope)
    update("preprocessor_config.json", pixels)
    update("tokenizer_config.json", special_tokens)


# ---------------------------------------------------------------- tokenizers and processors

def is_unnamed_tokenizer(error: Exception) -> bool:
    """4.x cannot name the tokenizer class that 5.x writes for a plain tokenizer.json ("TokenizersBackend")."""
    return isinstance(error, ValueError) and "TokenizersBackend" in str(error)


def word_level_tokenizer_class():
    """The fast tokenizer class to save a word-level tokenizer with: 4.57's Qwen processor insists on its
    own class, 5.x takes the generic one."""
    return transformers.PreTrainedTokenizerFast if IS_TRANSFORMERS_5 else transformers.Qwen2TokenizerFast


def bert_tokenizer(vocab_file: str | Path) -> transformers.BertTokenizer:
    """A BERT word-piece tokenizer from a vocab.txt. 5.x silently ignores `vocab_file` (its argument is
    `vocab`), which leaves every word [UNK]."""
    key = "vocab" if IS_TRANSFORMERS_5 else "vocab_file"
    return transformers.BertTokenizer(**{key: str(vocab_file)}, do_lower_case=True)


def pil_image_processor(name: str):
    """An image processor class that needs no torchvision: 5.x names the PIL backend `{name}Pil`; 4.x's
    plain class is PIL based."""
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


# ---------------------------------------------------------------- attention implementation

def attention_implementation(config) -> str | None:
    """The attention implementation a (sub-)config selects."""
    return config._attn_implementation  # a public property on every PretrainedConfig of both versions


def _config_path(root, target) -> list[str] | None:
    """Keys from `root` down `sub_configs` to the config object `target` ([] for root itself)."""
    queue = [(root, [])]
    while queue:
        config, path = queue.pop(0)
        if config is target:
            return path
        for key in getattr(config, "sub_configs", {}) or {}:
            sub = getattr(config, key, None)
            if sub is not None:
                queue.append((sub, path + [key]))
    return None


def _set_attention(model, config, implementation: str) -> None:
    path = _config_path(model.config, config)
    if path is None or (len(path) > 1 and not IS_TRANSFORMERS_5) or not hasattr(model, "set_attn_implementation"):
        # Out of the public API's reach: a config outside the model's sub-config tree (an attention module
        # holding its own copy), or nested deeper than 4.57's one level of sub-config keys. Set the
        # attribute that `set_attn_implementation` itself sets.
        config._attn_implementation_internal = implementation
        return
    request: dict | str = implementation if path else {"": implementation}
    for key in reversed(path):  # 5.x takes nested keys; a plain value applies to that sub-config's tree
        request = {key: request}
    model.set_attn_implementation(request)


@contextmanager
def attention_switched(model, configs: list, implementation: str) -> Iterator[None]:
    """Within the block the given (text decoder) configs select `implementation`, a name registered with
    AttentionInterface and AttentionMaskInterface; each is restored on exit, also on error. Through
    `model.set_attn_implementation` per sub-config, so the rest of the model is left as it is."""
    saved = [(config, attention_implementation(config)) for config in configs]
    try:
        for config, _ in saved:
            _set_attention(model, config, implementation)
        yield
    finally:
        for config, previous in reversed(saved):
            _set_attention(model, config, previous)
