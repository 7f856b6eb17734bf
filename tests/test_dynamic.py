import pytest
import torch

import functional_heads as fh
from functional_heads.models.architectures import locate

GENERATE = dict(max_new_tokens=5, do_sample=False)


def config_for(ratios, g=2.0):
    """Thresholds at the quartiles of these ratios, so that each class holds some heads."""
    low, high = torch.quantile(ratios.flatten(), torch.tensor([0.3, 0.7])).tolist()
    return fh.RescaleConfig(perc_last_layer=1, reas_first_layer=2, tau_perc=high, tau_reas=low, g_perc=g, g_reas=g)


@pytest.fixture
def qwen(tiny):
    t = tiny("qwen2_5_vl")
    yield t
    assert not any(p._forward_pre_hooks for p in locate(t.model).out_projs), "dynamic() left hooks behind"
    assert t.model.config.get_text_config()._attn_implementation == "sdpa"


def test_two_pass_equals_probe_then_rescale(qwen):
    inputs = qwen.inputs()
    ratios = fh.visual_attention_ratios(qwen.model, inputs)
    cfg = config_for(ratios)
    expected_heads = fh.identify_heads(ratios, cfg)
    with fh.rescale(qwen.model, expected_heads.gains):
        expected = qwen.model.generate(**inputs, **GENERATE)
    with fh.dynamic(qwen.model, cfg) as run:
        out = qwen.model.generate(**inputs, **GENERATE)
    assert torch.equal(out, expected)
    assert torch.equal(run.heads.perception, expected_heads.perception)
    assert torch.equal(run.heads.reasoning, expected_heads.reasoning)
    assert run.heads.perception.any() and run.heads.reasoning.any()
    assert not torch.equal(out, qwen.model.generate(**inputs, **GENERATE)), "the gains must change something"


def test_two_pass_batch_equals_single_rows(qwen):
    inputs = qwen.inputs(padding_side="left")
    cfg = config_for(fh.visual_attention_ratios(qwen.model, inputs))
    with fh.dynamic(qwen.model, cfg):
        batched = qwen.model.generate(**inputs, **GENERATE)[:, -5:]
        for b in range(2):
            single = qwen.model.generate(**qwen.inputs(prompt_lens=((5, 9)[b],), samples=[b]), **GENERATE)
            assert torch.equal(batched[b], single[0, -5:])


def test_single_pass_heads_are_consistent_with_its_own_rescaled_forward(qwen):
    inputs = qwen.inputs()
    ratios = fh.visual_attention_ratios(qwen.model, inputs)
    cfg = config_for(ratios)
    with fh.dynamic(qwen.model, cfg, mode="single-pass") as run:
        out = qwen.model.generate(**inputs, **GENERATE)
    torch.testing.assert_close(run.heads.ratios[:, 0], ratios[:, 0], atol=1e-5, rtol=0)  # nothing rescaled below
    assert run.heads.perception.any()
    with fh.rescale(qwen.model, run.heads.gains):  # the heads it picked, replayed, give the same generation
        assert torch.equal(qwen.model.generate(**inputs, **GENERATE), out)
        torch.testing.assert_close(fh.visual_attention_ratios(qwen.model, inputs), run.heads.ratios,
                                   atol=1e-5, rtol=0)


def test_single_pass_with_unit_gains_measures_the_unmodified_model(qwen):
    inputs = qwen.inputs(padding_side="right")
    ratios = fh.visual_attention_ratios(qwen.model, inputs)
    with fh.dynamic(qwen.model, config_for(ratios, g=1.0), mode="single-pass") as run:
        with torch.no_grad():
            qwen.model(**inputs)
    torch.testing.assert_close(run.heads.ratios, ratios, atol=1e-5, rtol=0)


def test_cleans_up_after_an_error_and_rejects_bad_input(qwen):
    inputs = qwen.inputs()
    cfg = config_for(fh.visual_attention_ratios(qwen.model, inputs))
    with pytest.raises(ValueError, match="mode='fast' is invalid"), fh.dynamic(qwen.model, cfg, mode="fast"):
        pass
    for mode in ("two-pass", "single-pass"):
        with pytest.raises(ValueError, match="needs input_ids"):
            with fh.dynamic(qwen.model, cfg, mode=mode), torch.no_grad():
                embeds = qwen.model.get_input_embeddings()(inputs["input_ids"])
                qwen.model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="perc_last_layer=7 is outside the model"):
        with fh.dynamic(qwen.model, fh.RescaleConfig.preset("ocean-r1")):
            pass
