import pytest
import torch.nn as nn
import transformers as tf

import functional_heads as fh
from functional_heads.testbed.tiny_models import ARCHS, IMAGE, TEXT, VIDEO


@pytest.mark.parametrize("arch", ARCHS)
def test_locate_finds_decoder_attention_and_image_token(tiny, arch):
    model = tiny(arch).model
    layout = fh.locate(model)
    assert layout.num_layers == TEXT["num_hidden_layers"]
    assert layout.num_heads == TEXT["num_attention_heads"]
    assert layout.num_heads * layout.head_dim == layout.out_projs[0].in_features
    assert layout.image_token_id == IMAGE
    assert layout.video_token_id == (VIDEO if arch in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision") else None)
    assert all(isinstance(proj, nn.Linear) for proj in layout.out_projs)
    vision_projs = {id(m) for name, m in model.named_modules() if "vision" in name or "visual" in name}
    assert not vision_projs & {id(p) for p in layout.out_projs}, "must pick the text decoder, not the vision tower"


def test_text_only_model_is_a_clear_error():
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT))
    with pytest.raises(ValueError, match="image token id"):
        fh.locate(model)


def test_unknown_layout_names_what_is_missing():
    class Odd(nn.Module):
        config = tf.PretrainedConfig()

        def get_decoder(self):
            return nn.Module()

    with pytest.raises(ValueError, match="ARCHITECTURES.*layers"):
        fh.locate(Odd())


def test_table_entries_override_the_generic_layout():
    assert fh.ARCHITECTURES["idefics3"].decoder == "model.text_model"
    assert fh.ARCHITECTURES["kimi_vl"].image_token == ("media_placeholder_token_id",)


def test_image_token_id_is_found_in_the_vision_config_too():
    """phi4_multimodal keeps its image token id in vision_config."""
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14, crop_size=28, image_token_id=300)
    audio = dict(hidden_size=32, intermediate_size=64, num_blocks=1, num_attention_heads=2,
                 depthwise_separable_out_channel=32, nemo_conv_channels=32, ext_pw_out_channel=32, input_size=16)
    config = tf.Phi4MultimodalConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, vision_config=vision,
                                     audio_config=audio, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    layout = fh.locate(tf.Phi4MultimodalForCausalLM(config))
    assert (layout.model_type, layout.image_token_id, layout.num_layers, layout.num_heads) == \
        ("phi4_multimodal", 300, 2, 4)
