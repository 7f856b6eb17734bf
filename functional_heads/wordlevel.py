"""A word-level tokenizer and Qwen2.5-VL processor files, for small models trained from scratch
(the bundled model, the tiny test model). Saved beside the weights, they load offline with
`AutoTokenizer` / `fh.load_processor` like any checkpoint's."""

from __future__ import annotations

import json
from pathlib import Path

import transformers as tf

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> {% else %}"
                 "{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
_LEGACY = int(tf.__version__.split(".")[0]) < 5


def save_word_level_processor(folder: str | Path, words: list[str], image_size: int, patch_size: int) -> dict:
    """Write tokenizer, image processor (fixed `image_size` square images) and chat template; return the vocab."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(SPECIAL + [w for w in words if w not in SPECIAL])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # transformers 4.57's Qwen processor insists on its own tokenizer class; 5.x takes the generic one
    (tf.Qwen2TokenizerFast if _LEGACY else tf.PreTrainedTokenizerFast)(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    ).save_pretrained(folder)
    image_processor = getattr(tf, "Qwen2VLImageProcessorPil", None) or tf.Qwen2VLImageProcessor
    image_processor(patch_size=patch_size, merge_size=2, temporal_patch_size=2, min_pixels=image_size ** 2,
                    max_pixels=image_size ** 2).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}))
    return vocab


def readable_by_transformers_4(folder: str | Path) -> None:
    """Add what transformers 4.57 needs to read a Qwen2.5-VL folder written by 5.x, in forms 5.x reads
    alike: rotary settings also under their old name, the pixel budget also as min/max_pixels (4.57 would
    otherwise apply its own minimum and give the image more tokens), extra special tokens as a mapping."""
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


def bert_tokenizer(vocab_file: str | Path) -> tf.BertTokenizer:
    """A BERT word-piece tokenizer from a vocab.txt (the argument is `vocab` in 5.x, `vocab_file` in 4.x)."""
    if _LEGACY:
        return tf.BertTokenizer(vocab_file=str(vocab_file), do_lower_case=True)
    return tf.BertTokenizer(vocab=str(vocab_file), do_lower_case=True)


def qwen2_5_vl_config(vocab: dict, *, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                      vision_width: int, vision_depth: int, vision_heads: int, patch_size: int,
                      mrope_section: list[int], max_positions: int = 1024) -> tf.Qwen2_5_VLConfig:
    """A small Qwen2.5-VL config whose special token ids match `vocab`."""
    rope = {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 10000.0}
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=len(vocab),
                max_position_embeddings=max_positions, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"],
                eos_token_id=vocab["<|im_end|>"], tie_word_embeddings=True,
                **({"rope_scaling": {**rope, "type": "default"}, "rope_theta": 10000.0} if _LEGACY
                   else {"rope_parameters": rope}))
    vision = dict(depth=vision_depth, hidden_size=vision_width, intermediate_size=2 * vision_width,
                  num_heads=vision_heads, patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=hidden, window_size=patch_size * 2 * 8,
                  fullatt_block_indexes=list(range(vision_depth)), in_chans=3)
    return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=vocab["<|image_pad|>"],
                               video_token_id=vocab["<|video_pad|>"],
                               vision_start_token_id=vocab["<|vision_start|>"],
                               vision_end_token_id=vocab["<|vision_end|>"], tie_word_embeddings=True)
