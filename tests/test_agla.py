"""AGLA: the GradCAM, the mask and the decoding rule against hand computations, on tiny random models."""

import numpy as np
import pytest
import torch
from decoding import assert_same_scores, manual_contrastive_steps
from PIL import Image

from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.methods import get_method
from functional_heads.evaluation.methods.agla import (
    AGLAConfig,
    ImageTextMatcher,
    agla_combine,
    agla_generate,
    augmented_views,
    keep_mask,
    mask_image,
)
from functional_heads.models.loading import prompt_inputs

TEXTS = ["how many red circles are there", "what is the total of blue squares in the image"]


@pytest.fixture(scope="module")
def matcher(blip_itm_folder):
    return ImageTextMatcher(blip_itm_folder)


def _images():
    return [Image.new("RGB", (96, 64), (200, 30, 30)), Image.radial_gradient("L").convert("RGB").resize((40, 40))]


def test_combination_by_hand():
    logits = torch.tensor([[2.0, 1.5, 0.0]])
    augmented = torch.tensor([[0.0, 1.0, 5.0]])
    out = agla_combine(logits, augmented, AGLAConfig(itm="x", alpha=2.0, beta=0.5))
    # l + 2 l_aug = [2, 3.5, 10]; token 2 has p/pmax = e^-2 < 0.5 and is cut, token 1 (e^-0.5 > 0.5) stays
    assert out[0, :2].tolist() == [2.0, 3.5] and out[0, 2] == float("-inf")


def test_gradcam_by_hand(matcher):
    """Attention x positive gradient of the match logit, from the text encoder's own attention outputs."""
    model, layer = matcher.model, 1
    cams, itc, side = matcher.relevance(_images(), TEXTS, layer, max_text_tokens=35)
    inputs = matcher.processor(images=_images(), text=TEXTS, padding="longest", return_tensors="pt")
    with torch.enable_grad():
        image = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        text = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                  encoder_hidden_states=image, output_attentions=True)
        attention = text.cross_attentions[layer]
        match = model.itm_head(text.last_hidden_state[:, 0])[:, 1]
        gradient, = torch.autograd.grad(match.sum(), attention)
    assert side == 64 and cams.shape == (2, 4, 4)
    for row in range(2):
        length = int(inputs["attention_mask"][row].sum())
        per_token = [(attention[row, :, t, 1:] * gradient[row, :, t, 1:].clamp(min=0)).mean(0)
                     for t in range(1, length - 1)]  # between [CLS] and [SEP]
        assert torch.allclose(cams[row].flatten(), torch.stack(per_token).mean(0), atol=1e-7)
    with torch.no_grad():  # ITC: the text encoded without the image, projected CLS against projected CLS
        text_only = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        cosine = torch.nn.functional.cosine_similarity(model.vision_proj(image[:, 0]),
                                                       model.text_proj(text_only.last_hidden_state[:, 0]))
    assert torch.allclose(itc, cosine, atol=1e-6)


def test_keep_mask_keeps_the_most_relevant_share():
    cam = torch.zeros(4, 4)
    cam[3, 0] = 1.0  # bottom-left patch
    keep = keep_mask(cam, size=32, keep=1 / 16, blur=0.0)
    assert 64 <= int(keep.sum()) <= 68  # 1/16 of 32 x 32 pixels, and any ties at the threshold
    rows, cols = keep.nonzero().T
    assert rows.min() >= 20 and cols.max() <= 11  # around the hot patch (rows 24-31, cols 0-7)
    ramp = torch.arange(16.0).view(4, 4)  # relevance grows along rows, then columns
    blurred = keep_mask(ramp, size=32, keep=0.5, blur=0.05)
    assert 512 <= int(blurred.sum()) <= 516 and blurred[31].all() and not blurred[0].any()


def test_mask_image_blacks_out_the_rest():
    image = Image.new("RGB", (40, 20), (10, 200, 30))
    out = mask_image(image, torch.tensor([[True, False], [False, False]]))
    assert out.size == (40, 20)
    assert out.getpixel((0, 0)) == (10, 200, 30) and out.getpixel((19, 9)) == (10, 200, 30)
    assert out.getpixel((20, 0)) == (0, 0, 0) and out.getpixel((39, 19)) == (0, 0, 0)


class RampMatcher:
    """Relevance as an ITM model gives it: a map growing along rows then columns, and chosen ITC values."""

    def __init__(self, itc):
        self.itc = torch.tensor(itc)

    def relevance(self, images, texts, layer, max_text_tokens):
        return torch.arange(16.0).view(1, 4, 4).repeat(len(images), 1, 1), self.itc[:len(images)], 32


def test_augmented_views_keep_one_minus_half_the_itc():
    images = [Image.new("RGB", (128, 96), (255, 255, 255)), Image.new("RGB", (64, 64), (255, 255, 255))]
    views = augmented_views(RampMatcher([0.6, -0.2]), images, TEXTS, AGLAConfig(itm="x"))
    for view, image, share in zip(views, images, [0.7, 1.0]):
        assert view.size == image.size
        kept = (np.asarray(view) != 0).any(-1).mean()
        assert kept == pytest.approx(share, abs=0.01)
    assert views[0].getpixel((127, 95)) == (255, 255, 255) and views[0].getpixel((0, 0)) == (0, 0, 0)


@torch.no_grad()
def test_agla_generate_matches_manual_decoding(bundled_vlm):
    model, processor = bundled_vlm
    items = list(shapes.items("dev", n=3))
    images, prompts = [it.scene.render() for it in items], [it.question for it in items]
    cfg = AGLAConfig(itm="x", layer=1)
    inputs = prompt_inputs(processor, images, prompts)
    augmented = prompt_inputs(processor, augmented_views(RampMatcher([0.8] * 3), images, prompts, cfg), prompts)
    out = agla_generate(model, inputs, augmented, cfg, max_new_tokens=6, do_sample=False, output_scores=True,
                        return_dict_in_generate=True)
    tokens, scores = manual_contrastive_steps(model, inputs, augmented, lambda l, a: agla_combine(l, a, cfg), 6)
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1]:], tokens)
    assert_same_scores(out.scores, scores)
    assert not torch.equal(augmented["pixel_values"], inputs["pixel_values"])


def test_method_needs_a_blip_itm_model(blip_itm_folder, clip_folder, tmp_path):
    with pytest.raises(ValueError, match="itm=PATH"):
        get_method("agla")
    with pytest.raises(ValueError, match="not a local model folder"):
        get_method("agla", {"itm": str(tmp_path)})
    with pytest.raises(ValueError, match="must be a BLIP image-text matching model"):
        get_method("agla", {"itm": str(clip_folder)})
    with pytest.raises(ValueError, match="layer 6 does not exist"):
        ImageTextMatcher(blip_itm_folder).relevance(_images(), TEXTS, 6, 35)
    method = get_method("agla", {"itm": str(blip_itm_folder), "alpha": "1.5", "layer": "1"})
    assert method.identity()["agla"]["alpha"] == 1.5 and method.identity()["agla"]["layer"] == 1
