"""AGLA's matcher and CGD's scorer on random-weight models built with the configs of the checkpoints the
the docs name (Salesforce/blip-itm-large-coco, google/siglip-so400m-patch14-384), saved and loaded as
folders. About 1.5 GB and a minute each on a CPU, so opt-in: FH_REAL_CONFIGS=1 python -m pytest tests/test_real_configs.py"""

import os

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from functional_heads.evaluation.methods.agla import AGLAConfig, ImageTextMatcher, augmented_views
from functional_heads.evaluation.methods.cgd import ImageTextSimilarity
from functional_heads.models.compat import bert_tokenizer
from functional_heads.testbed import tiny_models

pytestmark = pytest.mark.skipif(not os.environ.get("FH_REAL_CONFIGS"), reason="opt-in: FH_REAL_CONFIGS=1")
IMAGES = [Image.radial_gradient("L").convert("RGB").resize((640, 480)), Image.new("RGB", (300, 500), (20, 200, 20))]
TEXTS = ["how many red circles are there", "what is the total of blue squares in the image"]


def test_blip_itm_large_gives_a_24x24_gradcam_at_layer_6(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(tiny_models.ITM_WORDS) + "\n")
    vision = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  image_size=384, patch_size=16)
    config = tf.BlipConfig(vision_config=vision, text_config=dict(encoder_hidden_size=1024), image_text_hidden_size=256)
    tf.BlipForImageTextRetrieval(config).save_pretrained(tmp_path)
    tf.BlipProcessor(image_processor=tiny_models._pil("BlipImageProcessor")(size={"height": 384, "width": 384}),
                     tokenizer=bert_tokenizer(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    matcher = ImageTextMatcher(tmp_path)
    cams, itc, side = matcher.relevance(IMAGES, TEXTS, 6, 35)  # AGLA's defaults
    assert cams.shape == (2, 24, 24) and side == 384 and torch.isfinite(cams).all()
    for view, image, similarity in zip(augmented_views(matcher, IMAGES, TEXTS, AGLAConfig(itm="x")), IMAGES, itc):
        assert view.size == image.size
        assert (np.asarray(view) != 0).any(-1).mean() == pytest.approx(1 - similarity.item() / 2, abs=0.01)


def test_siglip_so400m_scores_texts(tmp_path):
    tokenizer_folder = tiny_models.save_tiny_siglip(tmp_path / "tokenizer")
    width = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
    config = tf.SiglipConfig(text_config=dict(vocab_size=32000, max_position_embeddings=64, **width),
                             vision_config=dict(image_size=384, patch_size=14, **width))
    folder = tmp_path / "siglip"
    tf.SiglipModel(config).save_pretrained(folder)
    tf.SiglipTokenizer.from_pretrained(tokenizer_folder).save_pretrained(folder)
    tiny_models._pil("SiglipImageProcessor")(size={"height": 384, "width": 384}).save_pretrained(folder)
    scorer = ImageTextSimilarity(folder)
    similarities = scorer(scorer.image(IMAGES[0]), TEXTS)
    assert len(similarities) == 2 and all(-1 <= s <= 1 for s in similarities)
