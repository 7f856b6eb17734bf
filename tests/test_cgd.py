"""CGD: the sentence-level search against a scripted tree, sentence sampling and similarity on tiny models."""

import pytest
import torch
from PIL import Image

from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.methods import get_method
from functional_heads.evaluation.methods.cgd import (
    CGDConfig,
    ImageTextSimilarity,
    Sentence,
    cgd_generate,
    search,
    sentence_sampler,
    terminal_token_ids,
)
from functional_heads.evaluation.methods.contrastive import with_generated
from functional_heads.models.loading import prompt_inputs
from functional_heads.testbed import tiny_models


def _tree(tree: dict, calls: list):
    """A sampler that draws the scripted sentences below each prefix (sentence tokens are single letters)."""
    def sample(prefix, budget):
        calls.append(("sample", tuple(prefix), budget))
        return [Sentence(tokens, logprobs, text, ended) for tokens, logprobs, text, ended in tree[tuple(prefix)]]
    return sample


IMAGE = Image.radial_gradient("L").convert("RGB")
SIMILARITY = {"a cat.": 0.9, "a dog.": 0.1, "it sleeps.": 0.5, "it flies.": 0.0, "it purrs.": 0.7, "end": 0.2}


def test_search_by_hand():
    # root -> "a cat." (sim .9, logp -1) | "a dog." (.1, -.1) | "a cat." again (a duplicate: dropped)
    # "a cat." -> "it sleeps." ended | "it flies." ; "a dog." -> "it purrs." ended
    tree = {(): [([1, 2], [-1.0, -1.0], "a cat.", False), ([3], [-0.1], "a dog.", False),
                 ([1, 2], [-1.0, -1.0], "a cat.", False)],
            (1, 2): [([4], [-0.5], "it sleeps.", True), ([5], [-3.0], "it flies.", False)],
            (3,): [([6], [-0.2], "it purrs.", True)]}
    calls = []
    cfg = CGDConfig(clip="x", beams=2, samples=2, alpha=0.5, beta=1.0)

    def similarity(texts):
        calls.append(("similarity", tuple(texts)))
        return [SIMILARITY[t] for t in texts]

    best = search(_tree(tree, calls), similarity, cfg, max_new_tokens=10)
    # ended: cat+sleeps: mean sim .7 + .5 * mean logp (-2.5/3) = .2833; dog+purrs: .4 + .5 * -.15 = .325
    assert best.tokens == [3, 6]
    assert best.score(cfg) == pytest.approx(0.4 + 0.5 * -0.15)
    assert ("similarity", ("a cat.", "a dog.")) in calls  # the duplicate is scored once, as one candidate
    # two candidates ended after the second sentence: the search stops without growing "it flies."
    assert [c for c in calls if c[0] == "sample"] == [("sample", (), 10), ("sample", (1, 2), 8), ("sample", (3,), 9)]


def test_search_keeps_the_best_beams_and_ends_at_the_token_budget():
    tree = {(): [([1], [0.0], "a cat.", False), ([2], [0.0], "a dog.", False)],
            (1,): [([3, 3], [0.0, 0.0], "it purrs.", False)]}
    calls = []
    cfg = CGDConfig(clip="x", beams=1, samples=1, alpha=0.0)
    best = search(_tree(tree, calls), lambda texts: [SIMILARITY[t] for t in texts], cfg, max_new_tokens=3)
    assert best.tokens == [1, 3, 3]  # "a dog." fell out of the single beam; the budget of 3 tokens ended it
    assert best.similarities == [0.9, 0.7]


def test_similarity_is_the_cosine_of_clip_features(clip_folder):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    scorer = ImageTextSimilarity(clip_folder)
    texts = ["red circle : r1c1", "<answer> 3 </answer> blue"]
    got = scorer(scorer.image(IMAGE), texts)
    model = CLIPModel.from_pretrained(clip_folder).eval()
    tokens = AutoTokenizer.from_pretrained(clip_folder)(texts, padding=True, return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(clip_folder)(images=IMAGE, return_tensors="pt")
    with torch.no_grad():
        logits = model(**tokens, **pixels).logits_per_text[:, 0]
    assert torch.allclose(torch.tensor(got), logits / model.logit_scale.exp(), atol=1e-5)
    assert len(set(got)) == 2


def test_siglip_texts_are_padded_to_64_tokens_as_siglip_was_trained(tmp_path):
    """SigLIP pools the last position, so its padding changes the features: it must be max_length 64."""
    pytest.importorskip("sentencepiece", reason="SigLIP tokenizers need the eval extra (sentencepiece)")
    pytest.importorskip("google.protobuf", reason="SigLIP tokenizers need the eval extra (protobuf)")
    from transformers import AutoImageProcessor, SiglipModel, SiglipTokenizer

    folder = tiny_models.save_tiny_siglip(tmp_path / "siglip")
    scorer = ImageTextSimilarity(folder)
    texts = ["how many red circles", "the total of blue squares is 12"]
    got = torch.tensor(scorer(scorer.image(IMAGE), texts))
    model, tokenizer = SiglipModel.from_pretrained(folder).eval(), SiglipTokenizer.from_pretrained(folder)
    pixels = AutoImageProcessor.from_pretrained(folder)(images=IMAGE, return_tensors="pt")

    def cosine(**padding):
        tokens = tokenizer(texts, return_tensors="pt", **padding)
        with torch.no_grad():
            logits = model(**tokens, **pixels).logits_per_text[:, 0]
        return (logits - model.logit_bias) / model.logit_scale.exp()

    assert torch.allclose(got, cosine(padding="max_length", max_length=64), atol=1e-5)
    assert not torch.allclose(got, cosine(padding=True), atol=1e-3)


@torch.no_grad()
def test_sentence_sampler_cuts_at_terminals_and_scores_raw_logprobs(bundled_vlm):
    model, processor = bundled_vlm
    item = next(iter(shapes.items("dev", n=1)))
    rows = prompt_inputs(processor, [item.scene.render()] * 3, [item.question] * 3)
    think_end = processor.tokenizer.convert_tokens_to_ids("</think>")
    eos = {model.generation_config.eos_token_id}
    torch.manual_seed(0)
    sample = sentence_sampler(model, processor.tokenizer, rows, CGDConfig(clip="x"), torch.tensor([think_end]), eos)
    first = sample([], 64)
    assert len(first) == 3
    for sentence in first:
        assert sentence.tokens[-1] == think_end and think_end not in sentence.tokens[:-1] and not sentence.ended
        assert len(sentence.logprobs) == len(sentence.tokens)
    # the log-probabilities are the model's own (raw logits, no temperature or top-k) for those tokens
    sentence = first[0]
    row = prompt_inputs(processor, [item.scene.render()], [item.question])
    full = with_generated(row, torch.tensor([sentence.tokens]))
    logits = model(**full).logits[0, rows["input_ids"].shape[1] - 1:-1].log_softmax(-1)
    want = logits.gather(-1, torch.tensor(sentence.tokens)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(sentence.logprobs), want, atol=1e-4)
    rest = sample(sentence.tokens, 64)  # continuing after "</think>": the answer, up to the end of sequence
    assert all(s.ended and s.tokens[-1] in eos for s in rest)


@pytest.mark.slow
@torch.no_grad()
def test_cgd_generate_is_reproducible_and_independent_of_the_batch(bundled_vlm, clip_folder):
    model, processor = bundled_vlm
    items = list(shapes.items("dev", n=3))
    images, prompts = [it.scene.render() for it in items], [it.question for it in items]
    scorer, cfg = ImageTextSimilarity(clip_folder), CGDConfig(clip=str(clip_folder))
    terminals = terminal_token_ids(processor.tokenizer)
    batch = cgd_generate(model, processor, scorer, images, prompts, cfg, terminals, max_new_tokens=64)
    again = cgd_generate(model, processor, scorer, images, prompts, cfg, terminals, max_new_tokens=64)
    alone = cgd_generate(model, processor, scorer, images[1:2], prompts[1:2], cfg, terminals, max_new_tokens=64)
    assert torch.equal(batch, again)
    width = alone.shape[1]
    assert torch.equal(batch[1, :width], alone[0]) and (batch[1, width:] == processor.tokenizer.pad_token_id).all()
    answers = processor.batch_decode(batch, skip_special_tokens=True)
    assert all("<answer>" in a and "</answer>" in a for a in answers)


def test_terminal_tokens(bundled_vlm):
    _, processor = bundled_vlm
    ids = terminal_token_ids(processor.tokenizer).tolist()
    assert sorted(processor.tokenizer.convert_ids_to_tokens(ids)) == [".", "?"]


def test_method_needs_a_clip_model(clip_folder):
    from functional_heads.testbed.bundled import bundled_model_path

    with pytest.raises(ValueError, match="clip=PATH"):
        get_method("cgd")
    with pytest.raises(ValueError, match="CLIP-style dual encoder"):
        get_method("cgd", {"clip": str(bundled_model_path())})
    with pytest.raises(ValueError, match="cgd has no setting gamma"):
        get_method("cgd", {"clip": str(clip_folder), "gamma": "1"})
    with pytest.raises(ValueError, match="wrong type"):
        get_method("cgd", {"clip": str(clip_folder), "beams": "three"})
    method = get_method("cgd", {"clip": str(clip_folder), "beams": "2"})
    assert method.identity()["cgd"]["beams"] == 2 and method.identity()["cgd"]["alpha"] == 0.01


class IdsAsText:
    """A tokenizer stand-in for the tiny models, which have none: a sentence's text is its ids."""

    def decode(self, ids, **kwargs):
        return str(ids)


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
@torch.no_grad()
def test_sampler_continues_the_prompt_cache_like_a_fresh_generate_on_every_architecture(tiny, arch):
    """With top-k 1 the sampler is greedy: its cached continuation must match generate() from scratch."""
    t = tiny(arch)
    rows = t.inputs(prompt_lens=(6, 6), samples=(0, 0))  # the same prompt twice, as CGD's rows are
    sample = sentence_sampler(t.model, IdsAsText(), rows, CGDConfig(clip="x", top_k=1, samples=2),
                              torch.tensor([], dtype=torch.long), {-1})  # no sentence ends: 4 tokens each
    for prefix in ([], [11, 12]):
        got = sample(prefix, 4)
        inputs = with_generated(rows, torch.tensor([prefix] * 2, dtype=torch.long).view(2, len(prefix)))
        fresh = t.model.generate(**inputs, do_sample=False, max_new_tokens=4, eos_token_id=None, pad_token_id=0)
        want = fresh[:, inputs["input_ids"].shape[1]:].tolist()
        assert [s.tokens for s in got] == want
