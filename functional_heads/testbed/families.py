"""Tiny random-weight models of every image-text family the installed transformers registers, built from
each family's own config class with its sizes shrunk, and inputs for them made by the family's own (PIL)
image processor. Nothing is downloaded. `scripts/architecture_matrix.py` runs `check.check_model` on each.

What is shrunk: widths, depths, head counts, experts, low-rank sizes (`SIZES`); rotary sections scaled to
the new head size; per-layer lists cut to the new depth keeping one layer of each kind. What is kept: the
vision tower's image and patch sizes, vocabularies and special token ids, so that the image processor's
defaults and the model agree. `FAMILY_OVERRIDES` holds what a family needs beyond that (data, not code).
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module

import torch
import transformers
from transformers import CONFIG_MAPPING
from transformers.models.auto import image_processing_auto, modeling_auto

from ..core.check import check_image
from ..models.architectures import GENERIC, config_token_id
from ..models.compat import projected_features
from .sizes import DECODER, HEAD_DIM, HEADS, HIDDEN, LAYERS

SIZES = dict(**DECODER, head_dim=HEAD_DIM, num_heads=HEADS,
             **{name: HIDDEN for name in ("embed_dim", "out_hidden_size", "projection_dim", "projector_hidden_size",
                                         "d_model", "text_hidden_size", "vision_hidden_size", "mm_hidden_size",
                                         "projection_hidden_size", "encoder_hidden_size")},
             # mixture of experts
             moe_intermediate_size=32, shared_expert_intermediate_size=32, n_routed_experts=4, num_experts=4,
             num_local_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=1,
             topk_group=1,
             # multi-head latent attention
             q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16)
FREE_IMAGE_TOKEN = 99  # below the ids the prompts are drawn from (100 and up)
DEPTHS = dict(num_hidden_layers=LAYERS, depth=2, num_layers=2, encoder_layers=2, decoder_layers=2)  # at most these


def families() -> dict[str, str]:
    """model_type -> model class name of every family the installed transformers registers as image-text-to-
    text, and of the multimodal LMs that take images (audio-only ones left out)."""
    found = dict(modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    for model_type, name in modeling_auto.MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES.items():
        if model_type not in found and _has_vision(model_type):
            found[model_type] = name
    return dict(sorted(found.items()))


def _has_vision(model_type: str) -> bool:
    sub_configs = getattr(CONFIG_MAPPING[model_type], "sub_configs", {}) or {}
    return any("vision" in key for key in sub_configs)


def _pixels(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# Per family: config fields to set (dotted into sub-configs) and image-processor arguments, where the
# defaults of a family's config and of its image processor describe different checkpoints; "pixels" makes
# the processor's output by hand where the processor needs torchvision.
FAMILY_OVERRIDES: dict[str, dict] = {
    # Kimi-VL / Kimi-K2.5: 14 px patches as [patches, 3, 14, 14] and their grid, merged 2x2 (4 tokens).
    "kimi_k25": {"pixels": lambda vision: {"pixel_values": _pixels(16, 3, vision.patch_size, vision.patch_size),
                                           "image_grid_thw": torch.tensor([[1, 4, 4]])}},
    # Llama 4: one tile of the tower's size.
    # Chunks of 16 tokens, so the chunked layers' masks matter within the prompt.
    "llama4": {"config": {"text_config.attention_chunk_size": 16, "vision_config.intermediate_size": 256, "vision_config.projector_input_dim": 64,
                          "vision_config.projector_output_dim": 64, "vision_config.vision_output_dim": 64},
               # transformers 5.24's forward reads `outputs.image_outputs` from its language model's output,
               # which has no such field: every forward raises. The checks run with the field defaulting to None.
               "bug": ("Llama4ForConditionalGeneration.forward reads `outputs.image_outputs`, a field its language "
                       "model's output lacks: every forward raises AttributeError, with or without functional-heads",
                       ("transformers.modeling_outputs", "MoeCausalLMOutputWithPast", "image_outputs", None)),
               "pixels": lambda vision: {"pixel_values": _pixels(1, 3, vision.image_size, vision.image_size)}},
    # Gemma 3's default tower (224 px, 16 px patches: 14 per side) cannot be pooled to 256 tokens (16 per side).
    "gemma3": {"config": {"mm_tokens_per_image": 49}},
    "shieldgemma2": {"config": {"mm_tokens_per_image": 49}},
    "t5gemma2": {"config": {"encoder.mm_tokens_per_image": 49}},
    # No image processor of their own: the one of the family they extend.
    "glm4v_moe": {"image_processor_of": "glm4v"},
    "mistral4": {"image_processor_of": "mistral3"},
    # Aya Vision's tower reads 364 px (26 patches, merged 2x2); the config default of 384 gives an odd 27.
    "aya_vision": {"config": {"vision_config.image_size": 364}},
    # ViP-LLaVA concatenates five tower layers; the defaults index a 24-layer tower.
    "vipllava": {"config": {"vision_feature_layers": [-2, -3, -4, -5, 1]}},
    "glm_ocr": {"image_processor_of": "glm4v"},
    "qwen3_vl_moe": {"image_processor_of": "qwen3_vl"},
    # The thinkers alone: their configs leave the image start token to the full Omni config (Qwen's id).
    "qwen2_5_omni_thinker": {"image_processor_of": "qwen2_5_vl", "config": {"vision_start_token_id": 151652}},
    "qwen3_omni_moe_thinker": {"image_processor_of": "qwen3_vl", "config": {"vision_start_token_id": 151652}},
    # One tile per image (their processors split large images into tiles).
    "idefics3": {"config": {"vision_config.image_size": 256},
                 "processor": {"do_image_splitting": False, "size": {"longest_edge": 256},
                               "max_image_size": {"longest_edge": 256}}},
    # Rotary sections when the config names none: the model's own default (height, width, time).
    "ernie4_5_vl_moe": {"mrope_default": (22, 22, 20)},
    "smolvlm": {"processor": {"do_image_splitting": False, "size": {"longest_edge": 512},
                              "max_image_size": {"longest_edge": 512}}},
}


@dataclass
class TinyFamily:
    model_type: str
    model: torch.nn.Module
    tokens_per_image: int
    batch: dict  # two left-padded prompts of different lengths, one image each
    rows: list[dict]  # the same prompts one at a time
    notes: list[str]  # how the inputs were made, where not by the family's own image processor


def _sub_configs(config):
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if isinstance(sub, transformers.PretrainedConfig):
            yield sub


def keep_each_kind(kinds: list, count: int) -> list:
    """The first `count` layer kinds, the last ones replaced so that every kind in `kinds` appears."""
    kept = list(kinds[:count])
    missing = [kind for kind in dict.fromkeys(kinds) if kind not in kept]
    for position, kind in zip(range(count - 1, -1, -1), missing):
        kept[position] = kind
    return kept


def _attribute(config, name: str):
    """config.name, or None where it is missing or only defined per layer (configs with per-layer settings
    raise on the global name)."""
    try:
        return getattr(config, name, None)
    except Exception:
        return None


def _rotary_half(config) -> int | None:
    heads = _attribute(config, "num_attention_heads")
    head_dim = _attribute(config, "head_dim") or (config.hidden_size // heads if heads else None)
    if head_dim is None:
        return None
    rope = getattr(config, "rope_parameters", None) or {}
    return int(head_dim * rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))) // 2


def shrink(config, uses_mrope: bool = False, mrope_default: tuple = (16, 24, 24)):
    """`config` with small sizes, in place (see the module docstring)."""
    for name, value in {**SIZES, **DEPTHS}.items():
        old = _attribute(config, name)
        if isinstance(old, int) and not isinstance(old, bool):
            setattr(config, name, min(old, value) if name in DEPTHS else value)
    if isinstance(_attribute(config, "qk_rope_head_dim"), int) and _attribute(config, "head_dim") is not None:
        config.head_dim = config.qk_rope_head_dim  # multi-head latent attention: rotary size is head_dim,
        config.num_key_value_heads = config.num_attention_heads  # and every head has its own keys
    kinds = _attribute(config, "layer_types")
    layers = _attribute(config, "num_hidden_layers")
    if isinstance(kinds, list) and layers and len(kinds) != layers:
        config.layer_types = keep_each_kind(kinds, layers)
    rope = _attribute(config, "rope_parameters")
    half = _rotary_half(config)
    if isinstance(rope, dict) and "rope_type" in rope and half and (uses_mrope or rope.get("mrope_section")):
        rope["mrope_section"] = scaled_sections(list(rope.get("mrope_section") or mrope_default), half)
    for sub in _sub_configs(config):
        shrink(sub, uses_mrope, mrope_default)
    return config


def scaled_sections(sections: list[int], total: int) -> list[int]:
    """Rotary sections scaled to sum to `total`; the rounding goes to the section unlike the others, so the
    pairs a model requires equal (height and width) stay equal."""
    scaled = [max(1, s * total // sum(sections)) for s in sections]
    odd = next((i for i, s in enumerate(sections) if sections.count(s) == 1), len(sections) - 1)
    scaled[odd] += total - sum(scaled)
    return scaled


def _uses_mrope(model_class) -> bool:
    """Whether the model's code (or code it derives from) splits rotary dims into multimodal sections: its
    default sections fit the full-size head, so the tiny config must name its own."""
    modules = {cls.__module__ for cls in model_class.__mro__ if cls.__module__.startswith("transformers.models.")}
    return any("mrope_section" in inspect.getsource(sys.modules[name]) for name in modules)


def _set_dotted(config, dotted: str, value) -> None:
    *path, name = dotted.split(".")
    for key in path:
        config = getattr(config, key)
    setattr(config, name, value)


def tiny_config(model_type: str):
    config_class = CONFIG_MAPPING[model_type]
    config = config_class()
    unset = [key for key in getattr(config, "sub_configs", {}) or {} if "vision" in key and getattr(config, key) is None]
    if unset:  # an optional tower left out by default (Gemma 4): its default instead
        config = config_class(**{key: {} for key in unset})
    text_model = transformers.MODEL_MAPPING.get(type(config.get_text_config()), None)  # the decoder's code
    overrides = FAMILY_OVERRIDES.get(model_type, {})
    shrink(config, uses_mrope=any(_uses_mrope(cls) for cls in (getattr(transformers, families()[model_type]),
                                                                  text_model) if cls is not None),
           mrope_default=overrides.get("mrope_default", (16, 24, 24)))
    for dotted, value in overrides.get("config", {}).items():
        _set_dotted(config, dotted, value)
    for name in GENERIC.image_token:  # left to the checkpoint by default (MiniCPM-V 4.6, BLIP-2): a free id
        if hasattr(config, name) and getattr(config, name) is None and config_token_id(config, GENERIC.image_token) is None:
            setattr(config, name, FREE_IMAGE_TOKEN)
    text = config.get_text_config()
    specials = _special_ids(config)
    if specials and getattr(text, "vocab_size", None) and max(specials) >= text.vocab_size:
        text.vocab_size = max(specials) + 1  # defaults that count added tokens outside the vocabulary
    return config


def _special_ids(config) -> set[int]:
    ids = {value for key, value in vars(config).items()
           if isinstance(value, int) and key.endswith(("token_id", "token_index"))}
    for sub in _sub_configs(config):
        ids |= _special_ids(sub)
    return ids


def image_processor(model_type: str, config):
    """The family's PIL image processor, told the vision tower's image, patch and merge sizes."""
    names = image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES.get(
        FAMILY_OVERRIDES.get(model_type, {}).get("image_processor_of", model_type))
    if not names:
        raise LookupError("transformers registers no image processor for it")
    if "pil" not in names:
        raise LookupError(f"its image processor ({', '.join(names.values())}) needs torchvision")
    cls = getattr(transformers, names["pil"])
    default = cls()
    vision = getattr(config, "vision_config", None)
    wanted = {}
    if vision is not None:
        for attr, field in (("patch_size", "patch_size"), ("merge_size", "spatial_merge_size"),
                            ("temporal_patch_size", "temporal_patch_size")):
            if getattr(default, attr, None) is not None and isinstance(getattr(vision, field, None), int):
                wanted[attr] = getattr(vision, field)
        side = getattr(vision, "image_size", None)
        side = side[0] if isinstance(side, (list, tuple)) else side
        if isinstance(side, int):
            size = getattr(default, "size", None)
            if size is not None and getattr(size, "height", None):
                wanted["size"] = {"height": side, "width": side}
            elif size is not None and getattr(size, "shortest_edge", None) and getattr(default, "crop_size", None):
                wanted["size"] = {"shortest_edge": side}
            if getattr(default, "crop_size", None):
                wanted["crop_size"] = {"height": side, "width": side}
    wanted.update(FAMILY_OVERRIDES.get(model_type, {}).get("processor", {}))
    return cls(**wanted)


def _pixel_fields(model_type: str, config) -> tuple[dict, list[str]]:
    """What the image processor returns for one generated image, and notes on how it was made. Where the
    processor needs torchvision, a square image of the tower's size as [1, 3, side, side] (what most towers
    read), tried in its place."""
    pixels = FAMILY_OVERRIDES.get(model_type, {}).get("pixels")
    if pixels:
        return pixels(config.vision_config), ["pixels made by hand (its image processor needs torchvision)"]
    try:
        return dict(image_processor(model_type, config)(images=[check_image(64)], return_tensors="pt")), []
    except LookupError as err:
        side = getattr(getattr(config, "vision_config", None), "image_size", None)
        side = side[0] if isinstance(side, (list, tuple)) else side
        if not isinstance(side, int):
            raise
        return {"pixel_values": _pixels(1, 3, side, side)}, [f"pixels made by hand ({err})"]


def _image_features_count(model, fields: dict) -> int:
    """How many image tokens the model expects for these pixels: the rows its projector returns."""
    get = getattr(model, "get_image_features", None) or getattr(model.model, "get_image_features")
    params = inspect.signature(get).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    with torch.no_grad():
        output = get(**{k: v for k, v in fields.items() if takes_any or k in params})
    features = projected_features(output)
    if features is None:  # a tower whose projector runs later in the model's forward (Llama 4)
        features = output.last_hidden_state
    features = features if isinstance(features, (list, tuple)) else [features]
    return sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features)


def known_bug(model_type: str) -> str | None:
    """What the installed transformers gets wrong for this family, if the table knows (None otherwise)."""
    bug = FAMILY_OVERRIDES.get(model_type, {}).get("bug")
    if bug is None:
        return None
    module, cls, name, _ = bug[1]
    return bug[0] if not hasattr(getattr(import_module(module), cls), name) else None


@contextmanager
def bug_worked_around(model_type: str):
    """Within the block, the known bug of the installed transformers for this family is patched over (a class
    attribute default, removed on exit). For the checks only: a user's process is never patched."""
    if known_bug(model_type) is None:
        yield
        return
    module, cls, name, value = FAMILY_OVERRIDES[model_type]["bug"][1]
    owner = getattr(import_module(module), cls)
    setattr(owner, name, value)
    try:
        yield
    finally:
        delattr(owner, name)


def tiny_family(model_type: str, seed: int = 0, prompt_lens=(5, 9)) -> TinyFamily:
    """A tiny `model_type` model in float32 eval mode with sdpa attention, and inputs for it."""
    config = tiny_config(model_type)
    torch.manual_seed(seed)
    model = getattr(transformers, families()[model_type])(config).float().eval()
    try:
        model.set_attn_implementation("sdpa")
    except ValueError:  # a part without sdpa (a vision tower); the decoder is switched by the checks anyway
        model.set_attn_implementation("eager")
    fields, notes = _pixel_fields(model_type, model.config)
    count = _image_features_count(model, fields)
    image = config_token_id(model.config, GENERIC.image_token)
    if image is None:
        raise LookupError("no image token id in its config")
    specials = _special_ids(model.config)
    vocab = model.config.get_text_config().vocab_size
    pool = torch.tensor([i for i in range(100, min(vocab, 1000)) if i not in specials])
    forward = inspect.signature(model.forward).parameters
    # Models that find images by their start token (Qwen-style rotary positions) get the image framed by it.
    opening = [t for t in [config_token_id(model.config, ("vision_start_token_id",))] if t is not None]
    closing = [t for t in [config_token_id(model.config, ("vision_end_token_id",))] if t is not None]

    def prompts(lengths):
        rows = []
        for length in lengths:
            generator = torch.Generator().manual_seed(length)
            words = pool[torch.randint(len(pool), (length + 3,), generator=generator)].tolist()
            rows.append(words[:length] + opening + [image] * count + closing + words[length:])
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, row in enumerate(rows):
            ids[b, width - len(row):], mask[b, width - len(row):] = torch.tensor(row), 1
        inputs = {"input_ids": ids, "attention_mask": mask}
        inputs.update({k: torch.cat([v] * len(rows)) if isinstance(v, torch.Tensor) else v for k, v in fields.items()})
        if "mm_token_type_ids" in forward:  # which tokens are the image's, as the families' processors return
            inputs["mm_token_type_ids"] = (ids == image).long()
        return inputs

    return TinyFamily(model_type, model, count, prompts(prompt_lens), [prompts([n]) for n in prompt_lens], notes)
