"""A word-level tokenizer and Qwen2.5-VL processor files, for small models trained from scratch
(the bundled model, the tiny test model). Saved beside the weights, they load offline with
`AutoTokenizer` / `fh.load_processor` like any checkpoint's."""

from __future__ import annotations

import json
from pathlib import Path

import transformers as tf

from ..models.compat import pil_image_processor, rope_settings, word_level_tokenizer_class

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> {% else %}"
                 "{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def save_word_level_processor(folder: str | Path, words: list[str], image_size: int, patch_size: int) -> dict:
    """Write tokenizer, image processor (fixed `image_size` square images) and chat template; return the vocab."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(SPECIAL + [w for w in words if w not in SPECIAL])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level_tokenizer_class()(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    ).save_pretrained(folder)
    pil_image_processor("Qwen2VLImageProcessor")(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                                 min_pixels=image_size ** 2, max_pixels=image_size ** 2
                                                 ).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}))
    return vocab


def qwen2_5_vl_config(vocab: dict, *, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                      vision_width: int, vision_depth: int, vision_heads: int, patch_size: int,
                      mrope_section: list[int], max_positions: int = 1024) -> tf.Qwen2_5_VLConfig:
    """A small Qwen2.5-VL config whose special token ids match `vocab`."""
    rope = {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 10000.0}
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=len(vocab),
                max_position_embeddings=max_positions, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"],
                eos_token_id=vocab["<|im_end|>"], tie_word_embeddings=True,
                **rope_settings(rope))
    vision = dict(depth=vision_depth, hidden_size=vision_width, intermediate_size=2 * vision_width,
                  num_heads=vision_heads, patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=hidden, window_size=patch_size * 2 * 8,
                  fullatt_block_indexes=list(range(vision_depth)), in_chans=3)
    return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=vocab["<|image_pad|>"],
                               video_token_id=vocab["<|video_pad|>"],
                               vision_start_token_id=vocab["<|vision_start|>"],
                               vision_end_token_id=vocab["<|vision_end|>"], tie_word_embeddings=True)
