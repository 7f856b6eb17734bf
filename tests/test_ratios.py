import pytest
import torch

import functional_heads as fh
from functional_heads.core.ratios import PROBE, probing, query_positions, visual_token_mask
from functional_heads.models.architectures import locate
from functional_heads.testbed.tiny_models import ARCHS, IMAGE, VIDEO


def eager_reference(model, inputs, offset=-1):
    """S_v from the full attention matrices of eager attention with output_attentions=True."""
    before = model.config.get_text_config()._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(before)
    rows = query_positions(inputs["attention_mask"], inputs["input_ids"], offset)
    visual = (inputs["input_ids"] == IMAGE).float()
    batch = torch.arange(len(rows))
    return torch.stack([(a[batch, :, rows] * visual[:, None]).sum(-1) for a in attentions], dim=1)


def one_row(tiny_model, b, padding_side, prompt_lens=(5, 9), **kwargs):
    return tiny_model.inputs(prompt_lens=prompt_lens[b:b + 1], samples=[b], padding_side=padding_side, **kwargs)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("arch", ARCHS)
def test_equals_eager_reference_and_single_rows(tiny, arch, padding_side):
    t = tiny(arch)
    inputs = t.inputs(padding_side=padding_side)
    ratios = fh.visual_attention_ratios(t.model, inputs)
    assert ratios.dtype == torch.float32 and ratios.shape == (2, 4, 4)
    torch.testing.assert_close(ratios, eager_reference(t.model, inputs), atol=1e-5, rtol=0)
    for b in range(2):
        single = fh.visual_attention_ratios(t.model, one_row(t, b, padding_side))
        torch.testing.assert_close(single[0], ratios[b], atol=1e-5, rtol=0)
    assert t.model.config.get_text_config()._attn_implementation == "sdpa"


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava", "idefics3", "gemma3"])
def test_several_images_per_prompt(tiny, arch):
    t = tiny(arch)
    inputs = t.inputs(images_per_prompt=2, padding_side="left")
    assert int((inputs["input_ids"][0] == IMAGE).sum()) == 2 * t.tokens_per_image
    torch.testing.assert_close(fh.visual_attention_ratios(t.model, inputs), eager_reference(t.model, inputs),
                               atol=1e-5, rtol=0)


def test_other_query_offset_and_per_token(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs(padding_side="right")
    ratios = fh.visual_attention_ratios(t.model, inputs, query_offset=-3)
    torch.testing.assert_close(ratios, eager_reference(t.model, inputs, offset=-3), atol=1e-5, rtol=0)
    per_token = fh.visual_attention_ratios(t.model, inputs, query_offset=-3, per_token=True)
    torch.testing.assert_close(per_token, ratios / t.tokens_per_image)


def test_wraps_eager_attention_too(tiny):
    t = tiny("llava")
    t.model.set_attn_implementation("eager")
    try:
        inputs = t.inputs()
        torch.testing.assert_close(fh.visual_attention_ratios(t.model, inputs), eager_reference(t.model, inputs),
                                   atol=1e-5, rtol=0)
        assert t.model.config.get_text_config()._attn_implementation == "eager"
    finally:
        t.model.set_attn_implementation("sdpa")


def test_attention_implementation_restored_on_error(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs()

    def fail(layer, ratios):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with probing(t.model, inputs["input_ids"], inputs["attention_mask"], fail):
            assert t.model.config.get_text_config()._attn_implementation == PROBE
            t.model(**inputs)
    assert t.model.config.get_text_config()._attn_implementation == "sdpa"
    with torch.no_grad():  # and the model still runs normally
        t.model(**inputs)


def test_prompt_without_image_tokens_is_a_clear_error(tiny):
    t = tiny("llava")
    inputs = t.inputs()
    inputs["input_ids"] = torch.where(inputs["input_ids"] == IMAGE, 5, inputs["input_ids"])
    with pytest.raises(ValueError, match=r"Prompt\(s\) \[0, 1\] of the batch hold no visual token \(token ids \[300\]\)"):
        fh.visual_attention_ratios(t.model, inputs)
    assert t.model.config.get_text_config()._attn_implementation == "sdpa"


def test_query_positions_under_left_and_right_padding():
    ids = torch.ones(2, 5, dtype=torch.long)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert query_positions(left, ids).tolist() == [4, 4]
    assert query_positions(right, ids).tolist() == [2, 4]
    assert query_positions(right, ids, -3).tolist() == [0, 2]
    assert query_positions(None, ids, -2).tolist() == [3, 3]
    with pytest.raises(ValueError, match="query_offset=-4 points before the start"):
        query_positions(right, ids, -4)


def test_video_tokens_count_only_when_asked(tiny):
    layout = locate(tiny("qwen2_5_vl").model)
    ids = torch.tensor([[5, IMAGE, VIDEO, 6]])
    assert visual_token_mask(ids, layout).tolist() == [[False, True, False, False]]
    assert visual_token_mask(ids, layout, include_video=True).tolist() == [[False, True, True, False]]


def test_query_tokens_average_the_ratios_of_the_last_prompt_tokens(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs(padding_side="left")
    window = fh.visual_attention_ratios(t.model, inputs, query_tokens=3)
    each = [eager_reference(t.model, inputs, offset=offset) for offset in (-1, -2, -3)]
    torch.testing.assert_close(window, torch.stack(each).mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "gemma3"])
def test_ratios_at_several_positions_equal_one_offset_at_a_time(tiny, arch):
    """S_v along a sequence (e.g. a chain of thought fed back with its prompt): each position as if it were i*."""
    t = tiny(arch)
    inputs = t.inputs(padding_side="left")
    last = inputs["input_ids"].shape[1] - 1  # left padded: every row ends at the last column
    positions = torch.tensor([[last - 3, last - 1, last]] * 2)
    along = fh.visual_attention_ratios(t.model, inputs, positions=positions)
    assert along.shape == (2, 3, 4, 4) and not along.isnan().any()
    for k, offset in enumerate((-4, -2, -1)):
        torch.testing.assert_close(along[:, k], fh.visual_attention_ratios(t.model, inputs, query_offset=offset),
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(along[:, 2], eager_reference(t.model, inputs), atol=1e-5, rtol=0)
