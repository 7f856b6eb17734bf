"""VCD and PAI against a manual computation of their formulas, on the bundled tiny model."""

import math

import pytest
import torch
from decoding import assert_same_scores, manual_contrastive_steps

from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.methods.contrastive import (
    PAI_SCOPE,
    PAIConfig,
    PAIState,
    VCDConfig,
    diffusion_noise,
    pai_attention,
    pai_attention_step,
    pai_combine,
    pai_generate,
    vcd_combine,
    vcd_generate,
)
from functional_heads.models.architectures import ModelLayout
from functional_heads.models.loading import prompt_inputs
from functional_heads.testbed import tiny_models


@pytest.fixture(scope="module")
def bundled(bundled_vlm):
    model, processor = bundled_vlm
    items = list(shapes.items("dev", n=3))
    inputs = prompt_inputs(processor, [it.scene.render() for it in items], [it.question for it in items])
    blind = prompt_inputs(processor, None, [it.question for it in items])
    return model, inputs, blind


def test_diffusion_noise_follows_the_schedule():
    x = torch.zeros(20000)
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)[500].item()
    noised = diffusion_noise(x, 500, seed=1)
    assert noised.std().item() == pytest.approx(math.sqrt(1 - abar), rel=0.03)  # x0 = 0: pure scaled noise
    ones = diffusion_noise(torch.ones(20000), 500, seed=1)
    assert (ones - noised).mean().item() == pytest.approx(math.sqrt(abar), rel=1e-5)
    assert torch.equal(noised, diffusion_noise(x, 500, seed=1))


def test_combination_formulas_by_hand():
    logits = torch.tensor([[2.0, 1.0, -3.0]])
    other = torch.tensor([[1.0, 2.0, 0.0]])
    vcd = vcd_combine(logits, other, VCDConfig(alpha=1.0, beta=0.1))
    # 2*l - d = [3, 0, -6]; token 2 has p/pmax = e^-5 < 0.1: cut
    assert vcd[0, :2].tolist() == [3.0, 0.0] and vcd[0, 2] == float("-inf")
    pai = pai_combine(logits, other, PAIConfig(gamma=1.1, beta=0.1))
    cond, uncond = logits.log_softmax(-1), other.log_softmax(-1)
    assert torch.allclose(pai[0, :2], (1.1 * (cond - uncond) + uncond)[0, :2]) and pai[0, 2] == float("-inf")


@torch.no_grad()
def test_vcd_generate_matches_manual_decoding(bundled):
    model, inputs, _ = bundled
    cfg = VCDConfig(alpha=1.0, beta=0.1, noise_step=500, seed=3)
    out = vcd_generate(model, inputs, cfg, max_new_tokens=6, do_sample=False, output_scores=True,
                       return_dict_in_generate=True)
    distorted = dict(inputs, pixel_values=diffusion_noise(inputs["pixel_values"], 500, seed=3))
    tokens, scores = manual_contrastive_steps(model, inputs, distorted, lambda l, d: vcd_combine(l, d, cfg), 6)
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1]:], tokens)
    assert_same_scores(out.scores, scores)
    plain = model(**inputs, use_cache=False).logits[:, -1]
    assert not torch.allclose(out.scores[0][torch.isfinite(out.scores[0])], plain[torch.isfinite(out.scores[0])])


@torch.no_grad()
def test_pai_guidance_matches_manual_decoding_without_the_attention_step(bundled):
    model, inputs, blind = bundled
    cfg = PAIConfig(alpha=0.0, gamma=1.1, beta=0.1)  # alpha 0: only the guidance against the blind prompt
    out = pai_generate(model, inputs, blind, cfg, max_new_tokens=6, do_sample=False, output_scores=True,
                       return_dict_in_generate=True)
    tokens, scores = manual_contrastive_steps(model, inputs, blind, lambda l, u: pai_combine(l, u, cfg), 6)
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1]:], tokens)
    assert_same_scores(out.scores, scores)


def test_pai_attention_step_by_hand():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)  # 2 heads share 1 kv head
    visual = torch.tensor([[False, True, True, False, False]])

    class Attention(torch.nn.Module):
        pass

    module = Attention()
    layout = ModelLayout("hand", attentions=[torch.nn.Identity() for _ in range(3)] + [module], out_projs=[],
                         num_heads=2, head_dim=4, text_configs=[], image_token_id=0, video_token_id=None)
    state = PAIState(layers=range(2, 32), visual=visual, alpha=0.5)
    with PAI_SCOPE.active(layout, state, base="eager"):  # module is layer 3; no config to switch
        out, _ = pai_attention_step(module, q, k, v, None, scaling=0.5)
    kk, vv = k.expand(1, 2, 5, 4), v.expand(1, 2, 5, 4)
    scores = q @ kk.transpose(2, 3) * 0.5
    last = scores[:, :, -1].clone()
    scores[:, :, -1] = torch.where(visual[:, None], last + 0.5 * last.abs(), last)  # only the last query row
    expected = (scores.softmax(-1) @ vv).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-6)


@torch.no_grad()
def test_pai_attention_changes_only_its_layers_and_is_removed_after(bundled):
    model, inputs, blind = bundled
    before = model(**inputs, use_cache=False).logits[:, -1]
    none = PAIConfig(alpha=0.0, gamma=1.0)  # gamma 1: guidance is the identity on log-probs
    out = pai_generate(model, inputs, blind, none, max_new_tokens=1, do_sample=False, output_scores=True,
                       return_dict_in_generate=True)
    finite = torch.isfinite(out.scores[0])
    assert torch.allclose(out.scores[0][finite], before.log_softmax(-1)[finite], atol=1e-4)
    with pai_attention(model, inputs["input_ids"], PAIConfig(alpha=0.5, start_layer=0, end_layer=8)):
        boosted = model(**inputs, use_cache=False).logits[:, -1]
    with pai_attention(model, inputs["input_ids"], PAIConfig(alpha=0.5, start_layer=8, end_layer=32)):
        outside = model(**inputs, use_cache=False).logits[:, -1]  # the model has layers 0-7 only
    assert not torch.allclose(boosted, before, atol=1e-2)
    assert torch.allclose(outside, before, atol=1e-5)
    assert torch.equal(model(**inputs, use_cache=False).logits[:, -1], before)  # attention restored


def test_configs_validate():
    with pytest.raises(ValueError):
        VCDConfig(noise_step=1000)
    with pytest.raises(ValueError):
        PAIConfig(start_layer=5, end_layer=5)


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
@torch.no_grad()
def test_cached_second_view_matches_recomputing_it_on_every_architecture(tiny, arch):
    """The second view runs with its own KV cache; it must give what recomputing it from scratch gives."""
    t = tiny(arch)
    inputs = t.inputs(prompt_lens=(5, 9))
    cfg = VCDConfig(alpha=1.0, beta=0.1, seed=2)
    distorted = dict(inputs, pixel_values=diffusion_noise(inputs["pixel_values"], 500, seed=2))
    special = torch.arange(tiny_models.IMAGE, tiny_models.VOCAB)  # never generate an image token
    out = vcd_generate(t.model, inputs, cfg, max_new_tokens=5, do_sample=False, output_scores=True,
                       return_dict_in_generate=True, eos_token_id=None, pad_token_id=0,
                       suppress_tokens=special.tolist())

    def combine(logits, distorted_logits):
        return vcd_combine(logits.index_fill(-1, special, float("-inf")), distorted_logits, cfg)

    tokens, scores = manual_contrastive_steps(t.model, inputs, distorted, combine, 5)
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1]:], tokens)
    assert_same_scores(out.scores, scores)


@torch.no_grad()
def test_second_view_feeds_one_token_per_step(bundled):
    model, inputs, _ = bundled
    lengths = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    try:
        vcd_generate(model, inputs, VCDConfig(), max_new_tokens=6, min_new_tokens=6, do_sample=False)
    finally:
        hook.remove()
    prompt = inputs["input_ids"].shape[1]
    assert lengths == [prompt, prompt] + [1, 1] * 5  # two prefills (main, second), then a token each per step
