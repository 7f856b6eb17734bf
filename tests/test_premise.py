"""evaluation/premise.py: S_v along a model's own answers, and the paired comparison of two models."""

import pytest
import torch

import functional_heads as fh
from functional_heads.evaluation import premise
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.utils.errors import UserError


def test_chain_positions_in_left_padded_rows():
    # row 0: 2 pads, prompt of 3, answer of 5; row 1: no pad, prompt of 4, answer of 6
    full_mask = torch.tensor([[0, 0] + [1] * 8, [1] * 10])
    positions = premise.chain_positions(torch.tensor([3, 4]), full_mask, fractions=(0.2, 0.6, 1.0))
    assert positions.tolist() == [[4, 5, 7, 9], [3, 4, 7, 9]]


@pytest.fixture(scope="module")
def bundled():
    path = fh.bundled_model_path()
    model, processor = fh.load_model(path, dtype=torch.float32), fh.load_processor(path)
    examples = list(get_benchmark("shapes").examples(None, "dev"))[:3]
    answers = ["<think> red : r1c2 = 1 . 1 * 4 = 4 </think> <answer> 4 </answer>", "<think> r2c2 : empty </think>",
               "<think> blue : none = 0 </think> <answer> 0 </answer>"]
    return model, processor, [e.load_image() for e in examples], [e.prompt for e in examples], answers


def test_attention_along_answers_batched_as_one_by_one_and_i_star_as_the_prompt(bundled):
    model, processor, images, prompts, answers = bundled
    along = premise.attention_along_answers(model, processor, images, prompts, answers, batch_size=3)
    one_by_one = premise.attention_along_answers(model, processor, images, prompts, answers, batch_size=1)
    batched, single = along.ratios, one_by_one.ratios
    assert batched.shape == (3, 5, 8, 8)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(along.image_share, one_by_one.image_share)  # padding does not count
    at_prompt = fh.visual_attention_ratios(model, fh.prompt_inputs(processor, images, prompts))
    torch.testing.assert_close(batched[:, 0], at_prompt, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[:, 0], batched[:, -1])  # later positions are other queries


def test_image_share_counts_only_the_tokens_a_query_attends_to():
    # row 0: 2 pads, then image tokens (id 9) at 2-4, text after; row 1: no pad, 2 image tokens
    ids = torch.tensor([[0, 0, 9, 9, 9, 1, 1, 1], [1, 9, 9, 1, 1, 1, 1, 1]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    share = premise.image_share(ids, mask, torch.tensor([[4, 7], [2, 7]]), image_token_id=9)
    assert torch.allclose(share, torch.tensor([[3 / 3, 3 / 6], [2 / 3, 2 / 8]]))


def test_normalised_sv_is_one_for_uniform_attention_at_every_length(bundled):
    """Uniform attention over a growing context: raw S_v falls with the image's share, normalised S_v
    stays 1 at every position."""
    share = torch.tensor([[0.5, 0.25, 0.125]])
    along = premise.AlongAnswers(share[:, :, None, None].expand(1, 3, 2, 2).clone(), share)
    assert torch.allclose(along.normalised, torch.ones(1, 3, 2, 2))
    assert along.ratios[0, -1, 0, 0] < along.ratios[0, 0, 0, 0]


def along(sv):
    return premise.AlongAnswers(sv, torch.full(sv.shape[:2], 0.25))


def test_compare_is_paired_and_refuses_other_items():
    records = [{"id": str(i), "score": i % 2 == 0, "failure": None if i % 2 == 0 else "perceptual"} for i in range(6)]
    worse = [{**r, "score": False, "failure": "perceptual"} for r in records]
    sv = along(torch.rand(6, 5, 8, 2))
    half = along(sv.ratios * 0.5)
    diff = premise.compare((records, sv), (worse, half))
    assert diff["accuracy"]["mean"] == pytest.approx(-0.5) and diff["perceptual"]["mean"] == pytest.approx(0.5)
    assert diff["accuracy"]["mcnemar"]["a_only"] == 3 and diff["accuracy"]["mcnemar"]["b_only"] == 0
    assert all(d["ci"][1] < 0 for d in diff["deep_half"])
    assert diff["normalised_deep_half"][0]["mean"] == pytest.approx(4 * diff["deep_half"][0]["mean"])
    text = premise.premise_markdown({"base": premise.summary(records, sv), "tuned": premise.summary(worse, half)}, diff)
    assert "| perceptual errors | 50.0% | 100.0% | +50.0%" in text and "| 100% of the chain |" in text
    assert diff["perceptual"]["mcnemar"]["p_holm"] >= diff["perceptual"]["mcnemar"]["p"] and "Holm p=" in text
    assert "Mean normalised S_v" in text and "| location errors | 0.0% | 0.0% |" in text
    with pytest.raises(ValueError, match="same items"):
        premise.compare((records, sv), (worse[::-1], sv))


def test_bundled_reasoning_tuned_model_loads_with_plain_transformers():
    import transformers

    from functional_heads.testbed.bundled import REASONING_TUNED

    path = fh.bundled_model_path(REASONING_TUNED)
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert sum(f.stat().st_size for f in path.iterdir()) < 25 * 2**20
    with pytest.raises(UserError, match="reinstall"):
        fh.bundled_model_path("no-such-model")
