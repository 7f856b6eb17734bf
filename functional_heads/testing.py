"""A tiny random-weight Qwen2.5-VL with a word-level processor, saved as a real checkpoint folder.

For tests, examples and trying the API without a real checkpoint: it loads exactly as a downloaded one
does (`AutoModelForImageTextToText.from_pretrained(folder)`, `fh.load_processor(folder)`). Its outputs
mean nothing; it is not trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers as tf

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
WORDS = ["user", "assistant", "how", "many", "red", "blue", "shapes", "are", "there", "?", "yes", "no", "one", "two"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> {% else %}"
                 "{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def save_tiny_qwen2_5_vl(folder: str | Path, seed: int = 0, layers: int = 4, heads: int = 4) -> Path:
    """Write the model (hidden 64) and its processor (16x16 images -> 16 image tokens) to `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate(SPECIAL + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    legacy = int(tf.__version__.split(".")[0]) < 5  # 4.57's processor insists on its own tokenizer class
    (tf.Qwen2TokenizerFast if legacy else tf.PreTrainedTokenizerFast)(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    ).save_pretrained(folder)
    image_processor = getattr(tf, "Qwen2VLImageProcessorPil", None) or tf.Qwen2VLImageProcessor  # 5.x / 4.57
    image_processor(patch_size=2, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16,
                                max_pixels=16 * 16).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}))
    rope = {"rope_type": "default", "mrope_section": [2, 2, 4], "rope_theta": 10000.0}
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=2, vocab_size=len(vocab), max_position_embeddings=4096, pad_token_id=0,
                bos_token_id=1, eos_token_id=2,
                **({"rope_scaling": {**rope, "type": "default"}, "rope_theta": 10000.0} if legacy
                   else {"rope_parameters": rope}))
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, window_size=8, fullatt_block_indexes=[1], in_chans=3)
    config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=vocab["<|image_pad|>"],
                                 video_token_id=vocab["<|video_pad|>"], vision_start_token_id=vocab["<|vision_start|>"],
                                 vision_end_token_id=vocab["<|vision_end|>"])
    torch.manual_seed(seed)
    tf.Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    return folder
