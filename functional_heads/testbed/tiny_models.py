"""Tiny random-weight vision-language models of the real architectures, built from configs (no download).

`build(arch)` returns a `Tiny` with the model in float32 eval mode and `inputs(...)`, which returns what
the model's processor would: input_ids holding the right number of image tokens, attention_mask,
pixel_values and the architecture's extra image fields, for a batch of prompts of different lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import transformers as tf

from ..models.compat import IS_TRANSFORMERS_5, projected_features, rope_settings
from .sizes import DECODER, LAYERS

VOCAB = 320
IMAGE, VIDEO, V_START, V_END, BOI, EOI = 300, 301, 302, 303, 304, 305
TEXT = dict(**DECODER, num_hidden_layers=LAYERS, vocab_size=VOCAB, max_position_embeddings=4096, pad_token_id=0,
            bos_token_id=1, eos_token_id=2)


def rope(**parameters) -> dict:
    """Rotary settings under the config names of the installed transformers (4.57 or 5.x)."""
    return rope_settings({"rope_type": "default", **parameters, "rope_theta": 10000.0})


QWEN_ROPE = rope(mrope_section=[2, 2, 4])


@dataclass
class Tiny:
    arch: str
    model: torch.nn.Module
    tokens_per_image: int
    image_fields: Callable[[int], dict]  # n_images -> pixel tensors and extra fields of one prompt
    stack_images: bool = False  # Idefics3 keeps images as [batch, images, ...]; the others concatenate

    def inputs(self, prompt_lens=(5, 9), images_per_prompt=1, padding_side="left", samples=None, text_after=3):
        """Prompts of `prompt_lens` text tokens, then the image(s), then `text_after` text tokens.

        Prompt i is drawn from seed `samples[i]` (default i), so a batch and its single rows hold the same data.
        """
        samples = range(len(prompt_lens)) if samples is None else samples
        rows, fields = [], []
        for n, sample in zip(prompt_lens, samples):
            torch.manual_seed(1000 + sample)
            fields.append(self.image_fields(images_per_prompt))
            ids = torch.randint(10, 290, (n,)).tolist()
            for _ in range(images_per_prompt):
                ids += [V_START] + [IMAGE] * self.tokens_per_image + [V_END]
            ids += torch.randint(10, 290, (text_after,)).tolist()
            rows.append(ids)
        width = max(map(len, rows))
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for b, ids in enumerate(rows):
            span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
            input_ids[b, span] = torch.tensor(ids)
            mask[b, span] = 1
        out = {"input_ids": input_ids, "attention_mask": mask}
        join = torch.stack if self.stack_images else torch.cat
        out.update({key: join([f[key] for f in fields]) for key in fields[0]})
        type_ids = (input_ids == IMAGE).long()
        if self.arch.startswith("qwen") and IS_TRANSFORMERS_5:  # the 5.x processors return it; 4.57 knows no such input
            out["mm_token_type_ids"] = type_ids
        if self.arch == "gemma3":
            out["token_type_ids"] = type_ids
        return out


def _qwen(config_cls, model_cls, vision, grid=4):
    cfg = config_cls(text_config={**TEXT, **QWEN_ROPE}, vision_config=vision,
                     image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=V_START,
                     vision_end_token_id=V_END)
    patch = vision["patch_size"]

    def fields(n_images):
        return {"pixel_values": torch.randn(n_images * grid * grid, 3 * 2 * patch * patch),
                "image_grid_thw": torch.tensor([[1, grid, grid]] * n_images)}

    return model_cls(cfg), grid * grid // 4, fields


def _qwen2_vl():
    vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=2,
                  spatial_merge_size=2, temporal_patch_size=2, in_chans=3)
    return _qwen(tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration, vision)


def _qwen2_5_vl():
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, window_size=8, fullatt_block_indexes=[1], in_chans=3)
    return _qwen(tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration, vision)


def _qwen3_vl():
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64,
                  deepstack_visual_indexes=[0])
    text = {**TEXT, "head_dim": 16, **rope(mrope_section=[2, 3, 3], mrope_interleaved=True)}
    cfg = tf.Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
                           vision_start_token_id=V_START, vision_end_token_id=V_END)

    def fields(n_images):
        return {"pixel_values": torch.randn(n_images * 16, 3 * 2 * 2 * 2),
                "image_grid_thw": torch.tensor([[1, 4, 4]] * n_images)}

    return tf.Qwen3VLForConditionalGeneration(cfg), 4, fields


CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=8,
            patch_size=2, projection_dim=32)


def _llava():
    cfg = tf.LlavaConfig(vision_config={**CLIP, "model_type": "clip_vision_model"},
                         text_config={**TEXT, "model_type": "llama"}, image_token_index=IMAGE,
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    return tf.LlavaForConditionalGeneration(cfg), 16, lambda n: {"pixel_values": torch.randn(n, 3, 8, 8)}


def _llava_onevision():
    cfg = tf.LlavaOnevisionConfig(vision_config={**CLIP, "model_type": "siglip_vision_model"},
                                  text_config={**TEXT, "model_type": "qwen2"}, image_token_index=IMAGE,
                                  video_token_index=VIDEO, image_grid_pinpoints=[[8, 8]],
                                  vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
    model = tf.LlavaOnevisionForConditionalGeneration(cfg)

    def fields(n_images):
        return {"pixel_values": torch.randn(n_images, 2, 3, 8, 8), "image_sizes": torch.tensor([[8, 8]] * n_images)}

    with torch.no_grad():  # the anyres layout decides the count: ask the model once
        feats = model.model.get_image_features(**fields(1), vision_feature_layer=-1,
                                               vision_feature_select_strategy="full")
    feats = projected_features(feats)
    return model, sum(f.shape[0] for f in feats), fields


def _idefics3():
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=8,
                  patch_size=2)
    cfg = tf.Idefics3Config(vision_config=vision, text_config={**TEXT, "model_type": "llama"},
                            image_token_id=IMAGE, scale_factor=2)

    def fields(n_images):
        return {"pixel_values": torch.randn(n_images, 3, 8, 8),
                "pixel_attention_mask": torch.ones(n_images, 8, 8, dtype=torch.bool)}

    return tf.Idefics3ForConditionalGeneration(cfg), 4, fields


def _gemma3():
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=8,
                  patch_size=2, model_type="siglip_vision_model")
    text = {**TEXT, "model_type": "gemma3_text", "head_dim": 16, "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"] * 2}
    cfg = tf.Gemma3Config(vision_config=vision, text_config=text, image_token_index=IMAGE, boi_token_index=BOI,
                          eoi_token_index=EOI, mm_tokens_per_image=4)
    return tf.Gemma3ForConditionalGeneration(cfg), 4, lambda n: {"pixel_values": torch.randn(n, 3, 8, 8)}


BUILDERS = {"qwen2_vl": _qwen2_vl, "qwen2_5_vl": _qwen2_5_vl, "qwen3_vl": _qwen3_vl, "llava": _llava,
            "llava_onevision": _llava_onevision, "idefics3": _idefics3, "gemma3": _gemma3}
ARCHS = tuple(BUILDERS)


def build(arch: str, seed: int = 0, attn_implementation: str = "sdpa") -> Tiny:
    torch.manual_seed(seed)
    model, n_tokens, fields = BUILDERS[arch]()
    model.set_attn_implementation(attn_implementation)
    return Tiny(arch, model.float().eval(), n_tokens, fields, stack_images=arch == "idefics3")



LLAVA_WORDS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "user", "assistant", ":", *"is there a red blue circle "
               "square in the image ? answer yes or no . how many shapes are".split()]
LLAVA_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                  "<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}</s> {% endfor %}"
                  "{% if add_generation_prompt %}assistant : {% endif %}")


def save_tiny_llava(folder, seed: int = 0):
    """A random-weight LLaVA (the `llava` sizes of `build`: a CLIP tower on 8x8 images, 16 image tokens, a
    Llama decoder) with a word-level tokenizer, a PIL CLIP image processor and a chat template, saved as a
    checkpoint folder that `fh.load_model` / `fh.load_processor` read."""
    from pathlib import Path

    from tokenizers import Tokenizer, models, pre_tokenizers

    from ..models.compat import word_level_tokenizer_class

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(LLAVA_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(["<image>"])  # split even when adjacent to other text
    fast = word_level_tokenizer_class()(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    text = {**TEXT, "model_type": "llama", "vocab_size": len(vocab), "pad_token_id": 0, "bos_token_id": 1,
            "eos_token_id": 2}
    config = tf.LlavaConfig(vision_config={**CLIP, "model_type": "clip_vision_model"}, text_config=text,
                            image_token_index=vocab["<image>"], vision_feature_select_strategy="default",
                            vision_feature_layer=-1)
    torch.manual_seed(seed)
    tf.LlavaForConditionalGeneration(config).save_pretrained(folder)
    image_processor = _pil("CLIPImageProcessor")(size={"shortest_edge": CLIP["image_size"]},
                                                 crop_size={"height": CLIP["image_size"], "width": CLIP["image_size"]})
    tf.LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=CLIP["patch_size"],
                      vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE,
                      image_token="<image>", num_additional_image_tokens=1).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- the baselines' extra models, saved to a folder

def _pil(name: str):
    """The PIL image processor: `NamePil` in transformers 5 (without torchvision), `Name` in 4.x."""
    return getattr(tf, name + "Pil", None) or getattr(tf, name)


ITM_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"how many red blue circles squares are there what is "
             "the total of in image".split()]


def save_tiny_blip_itm(folder, seed: int = 0, layers: int = 2):
    """A random-weight BLIP image-text matching model (64x64 images, 16-pixel patches: a 4x4 grid) and its
    processor, as `save_pretrained` writes them."""
    from transformers import BlipProcessor

    from ..models.compat import bert_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(ITM_WORDS) + "\n")
    tokenizer = bert_tokenizer(folder / "vocab.txt")
    config = tf.BlipConfig(
        text_config=dict(vocab_size=len(ITM_WORDS), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=2, sep_token_id=3),
        vision_config=dict(hidden_size=32, image_size=64, patch_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64),
        image_text_hidden_size=16)
    torch.manual_seed(seed)
    tf.BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipProcessor(image_processor=_pil("BlipImageProcessor")(size={"height": 64, "width": 64}),
                  tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_clip(folder, tokenizer_folder, seed: int = 0):
    """A random-weight CLIP model (32x32 images) with the tokenizer found in `tokenizer_folder`."""
    from ..models.loading import load_processor

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = load_processor(tokenizer_folder).tokenizer
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(seed)
    tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _pil("CLIPImageProcessor")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_tiny_siglip(folder, seed: int = 0):
    """A random-weight SigLIP model (32x32 images) with a small SentencePiece tokenizer trained here."""
    import sentencepiece
    from transformers import SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["how many red circles are there", "the total of blue squares is 12", "a green triangle in r1c2"] * 20
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(folder / "spiece"),
                                             vocab_size=30, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
    ids = dict(pad_token_id=0, eos_token_id=1, bos_token_id=1)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, **ids)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(seed)
    tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _pil("SiglipImageProcessor")(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- a Kimi-VL checkpoint, as Moonshot publishes it

KIMI_WORDS = ["<pad>", "<unk>", "[BOS]", "[EOS]", "<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>",
              "<|im_end|>", "<|media_start|>", "<|media_content|>", "<|media_end|>", "<|media_pad|>", "user",
              "assistant", "image", *"how many shapes are in the look at carefully . what colour is circle , and it to "
                                      "left of square ? red blue green one two".split()]
KIMI_TEMPLATE = ("{% for m in messages %}<|im_{{ m['role'] }}|> {{ m['role'] }} <|im_middle|> "
                 "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|media_start|> image <|media_content|> "
                 "<|media_pad|> <|media_end|> {% else %}{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> "
                 "{% endfor %}{% if add_generation_prompt %}<|im_assistant|> assistant <|im_middle|> {% endif %}")


def _kimi_vl_names(native: dict, heads: int) -> dict:
    """Native Kimi-K2.5 weights under Kimi-VL's names and layout: q, k, v fused into `wqkv` with the query and
    key rows back in interleaved-pair order, experts unstacked, the projector as multi_modal_projector."""
    out = {}
    for key, value in native.items():
        name = key.replace("model.language_model.", "language_model.model.").replace("lm_head.", "language_model.lm_head.")
        name = (name.replace("model.vision_tower.layers.", "vision_tower.encoder.blocks.")
                .replace("model.vision_tower.final_layernorm", "vision_tower.encoder.final_layernorm")
                .replace("model.vision_tower.patch_embed.pos_emb.position_embeddings", "vision_tower.patch_embed.pos_emb.weight")
                .replace("model.vision_tower.patch_embed.", "vision_tower.patch_embed.")
                .replace("model.mm_projector.in_proj", "multi_modal_projector.linear_1")
                .replace("model.mm_projector.out_proj", "multi_modal_projector.linear_2")
                .replace("model.mm_projector.pre_norm", "multi_modal_projector.pre_norm"))
        if "encoder.blocks." in name:
            name = (name.replace(".norm1.", ".norm0.") if ".norm1." in name else name.replace(".norm2.", ".norm1."))
            name = name.replace(".mlp.fc1.", ".mlp.fc0.") if ".mlp.fc1." in name else name.replace(".mlp.fc2.", ".mlp.fc1.")
            name = name.replace(".attn.proj.", ".wo.")
        if ".experts.gate_up_proj" in name:
            half = value.shape[1] // 2
            for j in range(value.shape[0]):
                out[name.replace("gate_up_proj", f"{j}.gate_proj.weight")] = value[j, :half].clone()
                out[name.replace("gate_up_proj", f"{j}.up_proj.weight")] = value[j, half:].clone()
        elif ".experts.down_proj" in name:
            for j in range(value.shape[0]):
                out[name.replace("down_proj", f"{j}.down_proj.weight")] = value[j].clone()
        elif ".attn.q_proj." in name or ".attn.k_proj." in name or ".attn.v_proj." in name:
            out[name] = value
        else:
            out[name] = value.clone()
    for key in [k for k in out if ".attn.q_proj." in k]:  # fuse
        rows = []
        for part in ("q_proj", "k_proj", "v_proj"):
            tensor = out.pop(key.replace("q_proj", part))
            if part != "v_proj":  # rotate-half halves -> interleaved pairs, per head
                shape = tensor.shape
                tensor = tensor.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).transpose(1, 2).reshape(shape)
            rows.append(tensor)
        out[key.replace(".attn.q_proj.", ".wqkv.")] = torch.cat(rows).contiguous()
    return out


def save_tiny_kimi_vl(folder, seed: int = 0):
    """A random-weight Kimi-VL (MoonViT + 2 DeepSeek-V3 layers: one dense, one MoE; MLA with full-rank queries)
    saved with Kimi-VL's config layout, key names and processor files. Returns (folder, the native model whose
    weights it holds)."""
    import json

    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(KIMI_WORDS)}
    text = dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4,
                num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=None,
                kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1,
                routed_scaling_factor=2.446, topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
                max_position_embeddings=512, rope_theta=800000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                pad_token_id=0, bos_token_id=2, eos_token_id=8, model_type="deepseek_v3")
    vision = dict(patch_size=14, init_pos_emb_height=8, init_pos_emb_width=8, num_attention_heads=2,
                  num_hidden_layers=1, hidden_size=32, intermediate_size=64, merge_kernel_size=[2, 2], model_type="moonvit")
    config = {"architectures": ["KimiVLForConditionalGeneration"], "model_type": "kimi_vl",
              "auto_map": {"AutoConfig": "configuration_kimi_vl.KimiVLConfig",
                           "AutoModel": "modeling_kimi_vl.KimiVLForConditionalGeneration"},
              "vision_config": vision, "text_config": text, "media_placeholder_token_id": vocab["<|media_pad|>"],
              "ignore_index": -100, "pad_token_id": 0, "torch_dtype": "float32"}
    from ..models.kimi_vl import native_config

    torch.manual_seed(seed)
    native = tf.Kimi_K25ForConditionalGeneration(native_config(config)).float().eval()
    with torch.no_grad():  # give the router's score bias values: zeros would not show a lost tensor
        for module in native.modules():
            if hasattr(module, "e_score_correction_bias"):
                module.e_score_correction_bias.normal_(0, 0.1)
    save_file(_kimi_vl_names(native.state_dict(), vision["num_attention_heads"]), str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([w for w in KIMI_WORDS if w.startswith("<|")])  # split even when adjacent
    tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="[BOS]", eos_token="<|im_end|>",
                               unk_token="<unk>").save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(KIMI_TEMPLATE)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "KimiVLImageProcessor", "patch_size": 14, "pad_input": True, "in_token_limit": 64,
         "merge_kernel_size": [2, 2], "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711],
         "auto_map": {"AutoImageProcessor": "image_processing_kimi_vl.KimiVLImageProcessor"}}))
    return folder, native
