"""Where each architecture keeps what the method touches: one small table, one generic fallback.

Every entry answers the same questions: where the text decoder's layers are, which submodule of a layer is
its self-attention, which submodule of that is the output projection whose input holds the per-head
outputs O_h, and which config fields hold the image (and video) token ids. Layers are counted from 0.

Hybrid decoders (Qwen3.5's linear-attention layers, Mamba or convolution layers) have layers without
softmax attention; those have no heads to measure or rescale, so a layout holds the attention layers only
and layer numbers count attention layers (`ModelLayout.decoder_layers` maps them back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from ..utils.errors import UserError


@dataclass(frozen=True)
class ArchSpec:
    """Where an architecture keeps what the method touches: attribute paths from the top model, and the config
    fields that hold the image and video token ids."""

    decoder: str = ""  # dotted path from the top model to the text decoder; "" means model.get_decoder()
    layers: str = "layers"
    attention: str = "self_attn"
    out_proj: str = "o_proj"
    image_token: tuple[str, ...] = ("image_token_id", "image_token_index")
    video_token: tuple[str, ...] = ("video_token_id", "video_token_index")
    # dotted paths from the top model to the vision side: the encoder and what maps its output into the decoder
    vision: tuple[str, ...] = ("model.vision_tower", "model.multi_modal_projector")


GENERIC = ArchSpec()
QWEN_VL = ArchSpec(vision=("model.visual",))  # the merger lives inside `visual`

# Keyed by `model.config.model_type`. Most HF vision-language models follow the generic layout.
ARCHITECTURES: dict[str, ArchSpec] = {
    "qwen2_vl": QWEN_VL,
    "qwen2_5_vl": QWEN_VL,
    "qwen3_vl": QWEN_VL,
    "llava": GENERIC,
    "llava_next": GENERIC,
    "llava_onevision": GENERIC,
    "idefics3": ArchSpec(decoder="model.text_model", vision=("model.vision_model", "model.connector")),
    "smolvlm": ArchSpec(decoder="model.text_model", vision=("model.vision_model", "model.connector")),
    "gemma3": GENERIC,
    # Kimi-VL (trust_remote_code): DeepSeek-V3 decoder under `language_model.model`; its attention is MLA,
    # whose o_proj input is [..., heads * v_head_dim], so rescaling works as for any other entry.
    "kimi_vl": ArchSpec(decoder="language_model.model", image_token=("media_placeholder_token_id",),
                        vision=("vision_tower", "multi_modal_projector")),
    "kimi_k25": ArchSpec(vision=("model.vision_tower", "model.mm_projector")),  # the native classes Kimi-VL loads into
    # Llama 4: get_decoder() is the causal LM, whose decoder is one level further in.
    "llama4": ArchSpec(decoder="language_model.model"),
}
"""Layouts by `config.model_type`; a type not listed gets the generic layout (`locate` checks it fits)."""

# `layer_types` entries of decoder layers without softmax attention (hybrid models).
NON_ATTENTION_LAYERS = ("linear_attention", "mamba", "conv", "short_conv", "recurrent")


def attention_layer_count(text_config: dict) -> int | None:
    """How many layers of a config.json text config have attention heads (None if it does not say)."""
    kinds = text_config.get("layer_types")
    if isinstance(kinds, list) and kinds:
        return sum(kind not in NON_ATTENTION_LAYERS for kind in kinds)
    layers = text_config.get("num_hidden_layers")
    return layers if isinstance(layers, int) else None


@dataclass
class ModelLayout:
    """The resolved places of one loaded model."""

    model_type: str
    attentions: list[nn.Module]
    out_projs: list[nn.Module]
    num_heads: int
    head_dim: int
    text_configs: list = field(repr=False)  # config objects the decoder reads its attention implementation from
    image_token_id: int
    video_token_id: int | None
    model: nn.Module = field(repr=False, default=None)  # the model these places belong to
    decoder_layers: list[int] = field(default_factory=list)  # decoder index of each attention layer

    @property
    def num_layers(self) -> int:
        return len(self.out_projs)


def _get(obj, dotted: str):
    for name in filter(None, dotted.split(".")):
        obj = getattr(obj, name)
    return obj


def config_token_id(config, names: tuple[str, ...]) -> int | None:
    """The first of `names` that holds an int, in the top config, then its text and vision sub-configs
    (phi4_multimodal keeps its image token id in vision_config)."""
    for cfg in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        for name in names:
            value = getattr(cfg, name, None) if cfg is not None else None
            if isinstance(value, int):
                return value
    return None


def locate(model: nn.Module) -> ModelLayout:
    """Resolve the layout of `model`, or raise UserError saying what is missing and how to add it."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    spec = ARCHITECTURES.get(model_type, GENERIC)
    hint = (f"functional_heads does not know the layout of model_type '{model_type}'. Add an ArchSpec to "
            "functional_heads.models.architectures.ARCHITECTURES naming it; `fheads check --model PATH` tests a layout.")
    try:
        decoder = _get(model, spec.decoder) if spec.decoder else model.get_decoder()
        layers = list(_get(decoder, spec.layers))
        decoder_layers = [i for i, layer in enumerate(layers) if hasattr(layer, spec.attention.split(".")[0])]
        attentions = [_get(layers[i], spec.attention) for i in decoder_layers or range(len(layers))]
        out_projs = [_get(attn, spec.out_proj) for attn in attentions]
    except (AttributeError, TypeError) as err:
        raise UserError(f"{hint} Could not find the decoder layers' attention output projection "
                        f"(decoder='{spec.decoder or 'get_decoder()'}', layers='{spec.layers}', "
                        f"attention='{spec.attention}', out_proj='{spec.out_proj}'): {err}") from err
    if not layers:
        raise UserError(f"{hint} The decoder has no layers under '{spec.layers}'.")
    text_config = getattr(decoder, "config", None) or model.config.get_text_config()
    num_heads = getattr(text_config, "num_attention_heads", None)
    in_features = getattr(out_projs[0], "in_features", None)
    if not isinstance(num_heads, int) or not in_features or in_features % num_heads:
        raise UserError(f"{hint} Cannot split the {spec.out_proj} input ({in_features} features) into "
                        f"num_attention_heads={num_heads} heads.")
    image_token_id = config_token_id(model.config, spec.image_token)
    if image_token_id is None:
        raise UserError(f"{hint} None of the config fields {spec.image_token} holds the image token id.")
    configs = {id(c): c for c in [text_config] + [getattr(a, "config", text_config) for a in attentions]}
    return ModelLayout(model_type, attentions, out_projs, num_heads, in_features // num_heads,
                       list(configs.values()), image_token_id, config_token_id(model.config, spec.video_token), model,
                       decoder_layers)


def vision_side(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of `model`'s vision side (encoder and projector into the decoder) by their dotted path."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    spec = ARCHITECTURES.get(model_type, GENERIC)
    try:
        return {path: _get(model, path) for path in spec.vision}
    except AttributeError as err:
        raise UserError(f"Could not find the vision side of model_type '{model_type}' at {', '.join(spec.vision)} "
                        f"({err}); name its modules in the `vision` field of its ArchSpec in "
                        "functional_heads.models.architectures.ARCHITECTURES.") from err
