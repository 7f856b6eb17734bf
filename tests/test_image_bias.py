import pytest
import torch

import functional_heads as fh
from functional_heads.core.image_bias import bias_matching, image_key_bias, mean_sv_under_bias
from functional_heads.models.architectures import locate
from functional_heads.utils.errors import UserError


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava"])
def test_zero_bias_changes_nothing_and_records_the_ratios(tiny, arch, padding_side):
    t = tiny(arch)
    inputs = t.inputs(padding_side=padding_side)
    layout = locate(t.model)
    before = logits(t.model, inputs)
    zero = torch.zeros(layout.num_layers, layout.num_heads)
    with image_key_bias(t.model, inputs["input_ids"], zero, attention_mask=inputs["attention_mask"],
                        record=True) as state:
        inside = logits(t.model, inputs)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(inside[real], before[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state.sv_at_i_star(), fh.visual_attention_ratios(t.model, inputs), atol=1e-5, rtol=0)
    assert t.model.config.get_text_config()._attn_implementation == "sdpa"  # restored on exit
    torch.testing.assert_close(logits(t.model, inputs), before)


def test_a_head_bias_raises_that_heads_attention_to_the_image_only_from_its_layer_on(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs()
    layout = locate(t.model)
    plain = fh.visual_attention_ratios(t.model, inputs)
    layer, head = 2, 1
    previous = None
    for value in (1.0, 3.0, 30.0):
        bias = torch.zeros(layout.num_layers, layout.num_heads)
        bias[layer, head] = value
        with image_key_bias(t.model, inputs["input_ids"], bias, attention_mask=inputs["attention_mask"],
                            record=True) as state:
            logits(t.model, inputs)
        sv = state.sv_at_i_star()
        torch.testing.assert_close(sv[:, :layer], plain[:, :layer], atol=1e-5, rtol=0)  # earlier layers untouched
        torch.testing.assert_close(sv[:, layer, :head], plain[:, layer, :head], atol=1e-5, rtol=0)
        assert (sv[:, layer, head] > plain[:, layer, head]).all()
        if previous is not None:
            assert (sv[:, layer, head] > previous).all()  # larger bias, more attention on the image
        previous = sv[:, layer, head]
    assert (previous > 0.99).all()  # a bias of 30 logits puts nearly all of it there


def test_generation_under_a_bias_differs_and_the_model_comes_back(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs()
    layout = locate(t.model)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = t.model.generate(**inputs, **kwargs)
        bias = torch.full((layout.num_layers, layout.num_heads), 8.0)
        with image_key_bias(t.model, inputs["input_ids"], bias, attention_mask=inputs["attention_mask"]):
            biased = t.model.generate(**inputs, **kwargs)
        again = t.model.generate(**inputs, **kwargs)
    assert biased.shape == plain.shape and not torch.equal(biased, plain)
    assert torch.equal(again, plain)


def test_bad_bias_is_one_line(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs()
    layout = locate(t.model)
    with pytest.raises(UserError, match=r"\[layers, heads\]"):
        with image_key_bias(t.model, inputs["input_ids"], torch.zeros(layout.num_layers + 1, layout.num_heads)):
            pass
    nan = torch.zeros(layout.num_layers, layout.num_heads)
    nan[0, 0] = float("nan")
    with pytest.raises(UserError, match="non-finite"):
        with image_key_bias(t.model, inputs["input_ids"], nan):
            pass


def test_bias_matching_brings_the_chosen_heads_to_their_targets(tiny):
    t = tiny("qwen2_5_vl")
    batches = [t.inputs(), t.inputs(prompt_lens=(7, 3), samples=[2, 3])]
    layout = locate(t.model)
    zero = torch.zeros(layout.num_layers, layout.num_heads)
    plain = mean_sv_under_bias(t.model, batches, zero)
    chosen = torch.zeros_like(zero, dtype=torch.bool)
    chosen[1, 0] = chosen[3, 2] = True
    target = plain.clone()
    target[1, 0] = plain[1, 0] + 0.5 * (1 - plain[1, 0])  # more attention on the image
    target[3, 2] = plain[3, 2] * 0.5  # and less
    bias, reached = bias_matching(t.model, batches, target, chosen)
    assert bias[1, 0] > 0 > bias[3, 2] and (bias[~chosen] == 0).all()
    torch.testing.assert_close(reached[chosen], target[chosen], atol=2e-3, rtol=0)
    torch.testing.assert_close(reached[0], plain[0])  # layers before the first biased head are untouched
