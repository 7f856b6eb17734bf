"""What differs between transformers versions: folder keys 4.57 reads, tokenizers, attention switching."""

import inspect
import json
import shutil

import pytest
import torch
from PIL import Image

from functional_heads.core.ratios import PROBE
from functional_heads.models.compat import (
    attention_implementation,
    attention_switched,
    bert_tokenizer,
    readable_by_transformers_4,
)
from functional_heads.models.loading import load_model, load_processor, prompt_inputs
from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl


def _logits(folder):
    processor, model = load_processor(folder), load_model(folder, dtype=torch.float32)
    inputs = prompt_inputs(processor, [Image.new("RGB", (16, 16), (200, 0, 0))], ["how many red shapes are there ?"])
    with torch.no_grad():
        return inputs["input_ids"], model(**inputs).logits


def test_readable_by_transformers_4_adds_old_keys_and_changes_nothing_for_the_running_version(tmp_path):
    folder = save_tiny_qwen2_5_vl(tmp_path / "model")
    ids, logits = _logits(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    readable_by_transformers_4(copy)
    config = json.loads((copy / "config.json").read_text())["text_config"]
    images = json.loads((copy / "preprocessor_config.json").read_text())
    tokenizer = json.loads((copy / "tokenizer_config.json").read_text())
    rope = config.get("rope_parameters") or config["rope_scaling"]
    assert config["rope_scaling"]["mrope_section"] == rope["mrope_section"] and "rope_theta" in config
    if "size" in images:
        assert images["min_pixels"] == images["size"]["shortest_edge"]
    assert not isinstance(tokenizer.get("extra_special_tokens", {}), list)
    ids_after, logits_after = _logits(copy)
    assert torch.equal(ids, ids_after) and torch.equal(logits, logits_after)
    before = {p.name: p.read_text() for p in copy.glob("*.json")}
    readable_by_transformers_4(copy)  # a second call changes nothing
    assert before == {p.name: p.read_text() for p in copy.glob("*.json")}


def test_bert_tokenizer_reads_its_vocabulary(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "circle"]))
    tokenizer = bert_tokenizer(tmp_path / "vocab.txt")
    assert tokenizer("Red circle")["input_ids"] == [2, 5, 6, 3]


def test_attention_switch_touches_only_the_text_decoder_and_always_restores(bundled_vlm):
    model, _ = bundled_vlm
    text, vision = model.config.text_config, model.config.vision_config
    before = attention_implementation(text), attention_implementation(vision)
    with attention_switched(model, [text], PROBE):
        assert attention_implementation(text) == PROBE and attention_implementation(vision) == before[1]
    assert (attention_implementation(text), attention_implementation(vision)) == before
    with pytest.raises(RuntimeError, match="boom"), attention_switched(model, [text], PROBE):
        raise RuntimeError("boom")
    assert (attention_implementation(text), attention_implementation(vision)) == before


def test_the_cache_keyword_is_read_from_each_models_forward(tiny):
    from functional_heads.models.compat import cache_argument

    class Old(torch.nn.Module):  # 4.x, early 5.x (5.19) and remote code
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids, cache=None, use_cache=None):
            return input_ids

    assert cache_argument(Old()) == "past_key_values" and cache_argument(New()) == "cache"
    model = tiny("qwen2_5_vl").model
    assert cache_argument(model) in inspect.signature(model.forward).parameters
