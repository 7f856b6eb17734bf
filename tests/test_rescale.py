import copy

import pytest
import torch
import torch.nn as nn

import functional_heads as fh
from functional_heads.models.architectures import locate
from functional_heads.testbed.tiny_models import ARCHS


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def some_gains(layout, seed=0, batch=None):
    gen = torch.Generator().manual_seed(seed)
    shape = (layout.num_layers, layout.num_heads) if batch is None else (batch, layout.num_layers, layout.num_heads)
    picked = torch.rand(shape, generator=gen) < 0.4
    return torch.where(picked, 1.0 + torch.rand(shape, generator=gen), torch.ones(shape))


def record_out_proj_input(model, layer, inputs):
    seen = []
    handle = locate(model).out_projs[layer].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        logits(model, inputs)
    finally:
        handle.remove()
    return seen[0]


def test_hooks_scale_each_heads_slice_of_the_out_proj_input(tiny):
    t = tiny("qwen2_5_vl")
    layout = locate(t.model)
    inputs = t.inputs()
    gains = torch.ones(layout.num_layers, layout.num_heads)
    gains[3] = torch.tensor([1.5, 1.0, 2.0, 1.0])  # last layer only: its input is the same with and without
    plain = record_out_proj_input(t.model, 3, inputs)
    with fh.rescale(t.model, gains):
        scaled = record_out_proj_input(t.model, 3, inputs)
    expected = (plain.view(*plain.shape[:-1], 4, -1) * gains[3][:, None]).view(plain.shape)
    torch.testing.assert_close(scaled, expected)
    assert not torch.equal(scaled, plain)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_per_input_gains_in_a_batch_equal_single_rows(tiny, padding_side):
    t = tiny("qwen2_5_vl")
    gains = some_gains(locate(t.model), batch=2)
    with fh.rescale(t.model, gains):
        batched = logits(t.model, t.inputs(padding_side=padding_side))
        mask = t.inputs(padding_side=padding_side)["attention_mask"].bool()
    for b in range(2):
        single_inputs = t.inputs(prompt_lens=((5, 9)[b],), samples=[b], padding_side=padding_side)
        with fh.rescale(t.model, gains[b]):
            single = logits(t.model, single_inputs)
        torch.testing.assert_close(batched[b][mask[b]], single[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_equals_hooks_and_unfold_restores(tiny, arch):
    t = tiny(arch)
    inputs = t.inputs()
    gains = some_gains(locate(t.model))
    weights = [p.weight.detach().clone() for p in locate(t.model).out_projs]
    vanilla = logits(t.model, inputs)
    with fh.rescale(t.model, gains):
        hooked = logits(t.model, inputs)
    fh.fold(t.model, gains)
    try:
        assert fh.is_folded(t.model)
        torch.testing.assert_close(logits(t.model, inputs), hooked, atol=1e-5, rtol=0)
        assert (hooked - vanilla).abs().max() > 1e-3
    finally:
        fh.unfold(t.model)
    assert not fh.is_folded(t.model)
    assert all(torch.equal(p.weight, w) for p, w in zip(locate(t.model).out_projs, weights))
    torch.testing.assert_close(logits(t.model, inputs), vanilla, atol=0, rtol=0)


def test_folding_twice_is_idempotent_and_another_map_is_refused(tiny):
    t = tiny("llava")
    layout = locate(t.model)
    gains = some_gains(layout)
    fh.fold(t.model, gains)
    try:
        once = [p.weight.detach().clone() for p in layout.out_projs]
        fh.fold(t.model, gains)
        assert all(torch.equal(p.weight, w) for p, w in zip(layout.out_projs, once))
        with pytest.raises(ValueError, match="already folded with other gains.*unfold"):
            fh.fold(t.model, some_gains(layout, seed=1))
        assert all(torch.equal(p.weight, w) for p, w in zip(layout.out_projs, once))
    finally:
        fh.unfold(t.model)
    with pytest.raises(ValueError, match="fold needs static gains"):
        fh.fold(t.model, some_gains(layout, batch=2))


def test_hooks_are_removed_when_the_block_raises(tiny):
    t = tiny("gemma3")
    inputs = t.inputs()
    vanilla = logits(t.model, inputs)
    with pytest.raises(RuntimeError, match="inside"):
        with fh.rescale(t.model, some_gains(locate(t.model))):
            assert any(p._forward_pre_hooks for p in locate(t.model).out_projs)
            raise RuntimeError("inside")
    assert not any(p._forward_pre_hooks for p in locate(t.model).out_projs)
    torch.testing.assert_close(logits(t.model, inputs), vanilla, atol=0, rtol=0)


def test_bad_gains_are_clear_errors(tiny):
    model = tiny("llava").model
    with pytest.raises(ValueError, match=r"gains must be \[layers, heads\].*layers=4 and heads=4, got \(3, 4\)"):
        with fh.rescale(model, torch.ones(3, 4)):
            pass
    with pytest.raises(ValueError, match=r"gains\[0, 0\]=-1 is invalid: it must be a finite number > 0"):
        with fh.rescale(model, -torch.ones(4, 4)):
            pass


@pytest.mark.parametrize("bad, message", [(float("inf"), "=inf is invalid: it must be a finite number > 0"),
                                          (float("nan"), "=nan is invalid"),
                                          (1e30, r"=1e\+30 is invalid: it must lie in \[0.1, 10\].*"
                                                 "allow_extreme_gains=True"),
                                          (0.01, r"=0.01 is invalid: it must lie in \[0.1, 10\]")])
def test_raw_gains_follow_the_settings_rule(tiny, bad, message):
    """Raw tensors get the rule RescaleConfig's gains get (finite, > 0, within 0.1..10 unless allowed)."""
    model = tiny("llava").model
    gains = torch.ones(4, 4)
    gains[2, 3] = bad
    for use in (lambda: fh.rescale(model, gains).__enter__(), lambda: fh.fold(model, gains),
                lambda: fh.rescale(model, gains[None].expand(2, -1, -1)).__enter__()):
        with pytest.raises(ValueError, match=r"gains\[.*2, 3\]" + message):
            use()
    assert not any(p._forward_pre_hooks for p in locate(model).out_projs) and not fh.is_folded(model)


def test_extreme_gains_work_when_asked_for(tiny):
    t = tiny("llava")
    layout = locate(t.model)
    gains = torch.ones(layout.num_layers, layout.num_heads)
    gains[3, 1] = 20.0
    inputs = t.inputs()
    with fh.rescale(t.model, gains, allow_extreme_gains=True):
        hooked = logits(t.model, inputs)
    fh.fold(t.model, gains, allow_extreme_gains=True)
    try:
        torch.testing.assert_close(logits(t.model, inputs), hooked, atol=1e-4, rtol=1e-4)
    finally:
        fh.unfold(t.model)
    # a head map whose settings allow them needs no flag (its gains were checked when the settings were made)
    heads = fh.HeadMap(gains > 1, torch.zeros_like(gains, dtype=torch.bool),
                       fh.RescaleConfig(3, 0, 0.5, 0.1, g_perc=20.0, allow_extreme_gains=True))
    with fh.rescale(t.model, heads):
        torch.testing.assert_close(logits(t.model, inputs), hooked, atol=0, rtol=0)


def test_rescaling_a_folded_export_warns_once(tiny):
    from functional_heads.core.heads import FOLDED_KEY
    from functional_heads.utils.errors import FunctionalHeadsWarning

    model = copy.deepcopy(tiny("llava").model)
    gains = some_gains(locate(model))
    setattr(model.config, FOLDED_KEY, {"head_map": "functional_heads.json", "gains": {"g_perc": 1.5, "g_reas": 1.0},
                                       "heads_scaled": 3})
    with pytest.warns(FunctionalHeadsWarning, match="folded export \\(gains g_perc=1.5, g_reas=1.0 on 3 heads"):
        with fh.rescale(model, gains):
            pass
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FunctionalHeadsWarning)
        fh.fold(model, gains)  # once per model: the user was told
    fresh = copy.deepcopy(tiny("llava").model)
    setattr(fresh.config, FOLDED_KEY, {"gains": {"g_perc": 1.5}})
    with pytest.warns(FunctionalHeadsWarning, match="compounds the gains"):
        fh.fold(fresh, gains)
    fresh = copy.deepcopy(tiny("llava").model)
    setattr(fresh.config, FOLDED_KEY, {"gains": {"g_perc": 1.5}})
    with pytest.warns(FunctionalHeadsWarning, match="compounds the gains"):
        with fh.dynamic(fresh, fh.RescaleConfig(1, 2, 0.5, 0.1, 1.2, 1.2)):
            pass


def test_bfloat16_model_gets_gains_in_its_dtype(tiny):
    t = tiny("qwen2_5_vl")
    model = copy.deepcopy(t.model).to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in t.inputs().items()}
    gains = some_gains(locate(model))
    with fh.rescale(model, gains):
        hooked = logits(model, inputs)
    assert hooked.dtype == torch.bfloat16
    fh.fold(model, gains)
    folded = logits(model, inputs)
    torch.testing.assert_close(folded.float(), hooked.float(), atol=0.1, rtol=0.05)  # bf16 rounding of W_O vs x
    weights = [p.weight.detach().clone() for p in locate(model).out_projs]
    fh.unfold(model)
    fh.fold(model, gains)
    assert all(torch.equal(p.weight, w) for p, w in zip(locate(model).out_projs, weights))


def test_quantized_out_proj_cannot_be_folded_but_hooks_work(tiny):
    t = tiny("llava")
    model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(t.model), {nn.Linear}, dtype=torch.qint8)
    inputs = t.inputs()
    gains = some_gains(locate(model))
    with pytest.raises(ValueError, match="quantized or not a plain Linear.*fh.rescale"):
        fh.fold(model, gains)
    vanilla = logits(model, inputs)
    with fh.rescale(model, gains):
        hooked = logits(model, inputs)
    assert (hooked - vanilla).abs().max() > 1e-3


def test_generate_with_expanded_batch_uses_each_inputs_gains(tiny):
    t = tiny("qwen2_5_vl")
    inputs = t.inputs()
    gains = some_gains(locate(t.model))
    kwargs = dict(max_new_tokens=4, do_sample=False, num_beams=2, num_return_sequences=2)
    with fh.rescale(t.model, gains):
        static = t.model.generate(**inputs, **kwargs)
    with fh.rescale(t.model, gains.expand(2, -1, -1)):
        per_input = t.model.generate(**inputs, **kwargs)
    assert torch.equal(static, per_input) and static.shape[0] == 4


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava"])
def test_masked_zeroes_exactly_the_masked_heads_slices(tiny, arch):
    from functional_heads.core.rescale import masked

    t = tiny(arch)
    layout = locate(t.model)
    inputs = t.inputs()
    mask = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.bool)
    mask[3, 1] = mask[3, 2] = True  # last layer only: its input is the same with and without
    plain = record_out_proj_input(t.model, 3, inputs)
    vanilla = logits(t.model, inputs)
    with masked(t.model, mask):
        silenced = record_out_proj_input(t.model, 3, inputs)
        changed = logits(t.model, inputs)
    heads = silenced.view(*silenced.shape[:-1], layout.num_heads, -1)
    assert (heads[..., 1:3, :] == 0).all()
    torch.testing.assert_close(heads[..., [0, 3], :], plain.view_as(heads)[..., [0, 3], :], atol=0, rtol=0)
    assert (changed - vanilla).abs().max() > 1e-4
    assert not any(p._forward_pre_hooks for p in layout.out_projs)  # removed on exit
    torch.testing.assert_close(logits(t.model, inputs), vanilla, atol=0, rtol=0)


def test_zero_gains_are_masking_only(tiny):
    from functional_heads.core.rescale import HeadScaler, masked

    model = tiny("llava").model
    layout = locate(model)
    with pytest.raises(ValueError, match="must be a finite number > 0"):  # rescaling never takes a gain of 0
        with fh.rescale(model, torch.zeros(layout.num_layers, layout.num_heads)):
            pass
    with pytest.raises(ValueError, match="a head mask must be boolean"):
        with masked(model, torch.zeros(layout.num_layers, layout.num_heads)):
            pass
    with pytest.raises(ValueError, match=r"a head mask must be \[layers, heads\]"):
        with masked(model, torch.zeros(3, layout.num_heads, dtype=torch.bool)):
            pass
    mask = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.bool)
    mask[1, 0] = True
    scaler = HeadScaler(model, mask=mask)
    try:
        assert [p for p in layout.out_projs if p._forward_pre_hooks] == [layout.out_projs[1]]  # only where masked
    finally:
        scaler.remove()



def test_folded_weight_is_the_weight_fold_writes(tiny):
    """What an engine that takes weights (vLLM) gets: bit-equal to the columns `fold` writes in place, the
    input left as it was, heads with gain 1 untouched."""
    from functional_heads.core.rescale import fold, folded_weight, unfold

    model = tiny("qwen2_5_vl").model
    layout = locate(model)
    gains = torch.ones(layout.num_layers, layout.num_heads)
    gains[1, 0], gains[1, 2] = 1.7, 0.3
    original = layout.out_projs[1].weight.detach().clone()
    folded = folded_weight(original, gains[1], layout.head_dim)
    assert torch.equal(original, layout.out_projs[1].weight)
    by_head = folded.view(folded.shape[0], layout.num_heads, layout.head_dim)
    before = original.view_as(by_head)
    assert torch.equal(by_head[:, 1], before[:, 1]) and not torch.equal(by_head[:, 0], before[:, 0])
    fold(model, gains)
    try:
        assert torch.equal(layout.out_projs[1].weight, folded)
    finally:
        unfold(model)
    bf16 = folded_weight(original.to(torch.bfloat16), gains[1], layout.head_dim)
    assert bf16.dtype == torch.bfloat16
