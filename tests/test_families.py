"""Tiny models of the registered families (functional_heads.families) and the docs' architecture table."""

import re
from pathlib import Path

import pytest
import torch
import transformers

from functional_heads.core.check import check_model
from functional_heads.models.architectures import attention_layer_count, locate
from functional_heads.testbed.families import (
    bug_worked_around,
    families,
    keep_each_kind,
    known_bug,
    scaled_sections,
    tiny_config,
    tiny_family,
)

pytestmark = pytest.mark.skipif(not hasattr(transformers, "Kimi_K25Config"), reason="needs the families of transformers 5.x")
TABLE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "architectures.md"
# The reasoning families users run, and the hybrid and attention-sink layouts.
REQUIRED = ["kimi_k25", "glm4v", "glm4v_moe", "glm46v", "qwen3_vl_moe", "qwen3_5", "internvl", "mistral3",
            "llava_next", "smolvlm", "ernie4_5_vl_moe", "llama4", "hy_v4_vl", "qwen3_omni_moe_thinker"]


def table_rows() -> dict[str, list[str]]:
    rows = {}
    table = TABLE_PAGE.read_text().split("<!-- architecture-matrix:start -->")[1].split("<!-- architecture-matrix:end")[0]
    for line in table.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def test_families_are_every_image_text_family_registered():
    from transformers.models.auto import modeling_auto

    found = families()
    assert set(modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES) <= set(found)
    assert "phi4_multimodal" in found and "qwen2_audio" not in found  # images yes, audio-only no


def test_the_architecture_table_lists_every_family():
    assert set(table_rows()) == set(families()), "rerun scripts/architecture_matrix.py"


@pytest.mark.slow
@pytest.mark.parametrize("model_type", REQUIRED)
def test_the_method_works_on_the_reasoning_families(model_type):
    with bug_worked_around(model_type):
        family = tiny_family(model_type)
        result = check_model(family.model, family.batch, family.rows)
    assert result.ok, "\n".join(result.lines())
    assert table_rows()[model_type][2:4] == ["yes", "yes"]


def test_hybrid_decoders_keep_their_attention_layers_only():
    family = tiny_family("qwen3_5")
    layout = locate(family.model)
    kinds = family.model.config.text_config.layer_types
    assert layout.decoder_layers == [i for i, kind in enumerate(kinds) if kind == "full_attention"]
    assert layout.num_layers == attention_layer_count(family.model.config.text_config.to_dict()) >= 1
    assert 0 < layout.num_layers < len(kinds)


def test_attention_layer_count_reads_layer_types():
    assert attention_layer_count({"layer_types": ["linear_attention"] * 3 + ["full_attention"]}) == 1
    assert attention_layer_count({"num_hidden_layers": 28}) == 28 and attention_layer_count({}) is None


def test_shrinking_keeps_each_layer_kind_and_equal_rotary_pairs():
    assert keep_each_kind(["a", "a", "a", "b"] * 8, 4) == ["a", "a", "a", "b"]
    assert keep_each_kind(["s"] * 5 + ["f"], 2) == ["s", "f"]
    assert scaled_sections([16, 24, 24], 8) == [2, 3, 3] and scaled_sections([22, 22, 20], 8) == [2, 2, 4]
    config = tiny_config("qwen2_5_vl")
    assert sum(config.text_config.rope_parameters["mrope_section"]) == 8 and config.text_config.hidden_size == 64


def test_known_bug_patch_is_removed_after_the_block():
    from transformers.modeling_outputs import MoeCausalLMOutputWithPast

    assert known_bug("llama4") and not hasattr(MoeCausalLMOutputWithPast, "image_outputs")
    with bug_worked_around("llama4"):
        assert MoeCausalLMOutputWithPast.image_outputs is None
    assert not hasattr(MoeCausalLMOutputWithPast, "image_outputs") and known_bug("qwen2_5_vl") is None


def test_attention_sinks_enter_the_probe_softmax():
    from functional_heads.core.ratios import query_row_attention

    torch.manual_seed(0)
    query, key = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    sinks = torch.tensor([0.5, -1.0])
    rows = query_row_attention(query, key, None, torch.tensor([2]), 0.5, sinks=sinks)
    scores = torch.einsum("bhd,bhkd->bhk", query[:, :, 2], key) * 0.5
    expected = torch.softmax(torch.cat([scores, sinks.view(1, 2, 1)], -1), -1)[..., :-1]
    torch.testing.assert_close(rows, expected)
    assert (rows.sum(-1) < 1).all()


def test_the_llama4_check_covers_chunked_and_rotary_free_layers():
    family = tiny_family("llama4")
    text = family.model.config.text_config
    assert {"chunked_attention", "full_attention"} <= set(text.layer_types)
    assert 0 in text.no_rope_layers[:text.num_hidden_layers]  # a layer without rotary positions
    assert family.batch["input_ids"].shape[1] > 4 * text.attention_chunk_size  # the chunk mask matters
