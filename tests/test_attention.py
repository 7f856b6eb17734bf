"""ScopedAttention: registration with its masks, the active block, and the error outside it."""

import sys

import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from functional_heads.core.attention import ScopedAttention, base_attention
from functional_heads.models.architectures import ModelLayout, locate
from functional_heads.models.compat import attention_implementation, attention_switched


def _recording(module, query, key, value, attention_mask, **kwargs):
    """Run the base kernel; note (layer, mask) in the state list for the decoder's layers."""
    scope = RECORDING.current()
    layer = scope.layer(module)
    if layer is not None:
        scope.state.append((layer, attention_mask))
    return scope.kernel(module)(module, query, key, value, attention_mask, **kwargs)


RECORDING: ScopedAttention[list] = ScopedAttention("functional_heads_test_recording", _recording,
                                                   inside="the recording test")
OTHER: ScopedAttention[list] = ScopedAttention("functional_heads_test_other", _recording, inside="the other test")


def bare_layout(attentions=()) -> ModelLayout:
    """A layout with no config to switch: the scope alone, without a model."""
    return ModelLayout("bare", attentions=list(attentions), out_projs=[], num_heads=1, head_dim=1, text_configs=[],
                       image_token_id=0, video_token_id=None)


@pytest.mark.parametrize("base", ["sdpa", "eager"])
@torch.no_grad()
def test_the_base_kernel_gets_its_own_masks_and_gives_the_same_logits(tiny, base):
    """gemma3 mixes sliding-window and full layers; a left-padded batch needs the padding mask too."""
    t = tiny("gemma3")
    t.model.set_attn_implementation(base)
    try:
        inputs = t.inputs(padding_side="left")
        plain = t.model(**inputs, use_cache=False).logits
        layout = locate(t.model)
        seen = []
        with RECORDING.active(layout, seen, base=base) as scope:
            assert attention_implementation(layout.text_configs[0]) == RECORDING.name and scope.state is seen
            scoped = t.model(**inputs, use_cache=False).logits
        assert torch.equal(scoped, plain)
        assert [layer for layer, _ in seen] == list(range(layout.num_layers))
        assert all(mask is not None for _, mask in seen)  # padding: no kernel may run mask-free
        assert attention_implementation(layout.text_configs[0]) == base
    finally:
        t.model.set_attn_implementation("sdpa")


def test_an_error_inside_restores_the_implementation_and_the_scope(tiny):
    t = tiny("llava")
    layout = locate(t.model)
    with pytest.raises(KeyError, match="boom"), RECORDING.active(layout, [], base="sdpa"):
        raise KeyError("boom")
    assert attention_implementation(layout.text_configs[0]) == "sdpa"
    with pytest.raises(RuntimeError, match="only valid inside the recording test"):
        RECORDING.current()
    with torch.no_grad():
        t.model(**t.inputs())  # the model runs normally again


def test_running_the_name_outside_its_block_is_an_error(tiny):
    t = tiny("llava")
    layout = locate(t.model)
    message = "attn_implementation 'functional_heads_test_recording' is only valid inside the recording test."
    with pytest.raises(RuntimeError, match=message):
        RECORDING.current()
    with attention_switched(t.model, layout.text_configs, RECORDING.name), torch.no_grad():
        with pytest.raises(RuntimeError, match=message):
            t.model(**t.inputs())
    assert attention_implementation(layout.text_configs[0]) == "sdpa"


def test_nested_blocks_see_their_own_state_and_other_names_see_none():
    outer, inner = [], []
    with RECORDING.active(bare_layout(), outer, base="sdpa"):
        with pytest.raises(RuntimeError, match="only valid inside the other test"):
            OTHER.current()
        with RECORDING.active(bare_layout(), inner, base="eager"):
            assert RECORDING.current().state is inner and RECORDING.current().base == "eager"
        assert RECORDING.current().state is outer and RECORDING.current().base == "sdpa"
        with OTHER.active(bare_layout(), inner, base="eager"):
            assert OTHER.current().state is inner and RECORDING.current().state is outer
    with pytest.raises(RuntimeError):
        RECORDING.current()


def test_nested_names_switch_the_decoder_and_switch_it_back(tiny):
    t = tiny("qwen2_5_vl")
    layout = locate(t.model)
    config = layout.text_configs[0]
    with RECORDING.active(layout, [], base="sdpa"):
        with OTHER.active(layout, [], base="sdpa"):
            assert attention_implementation(config) == OTHER.name
        assert attention_implementation(config) == RECORDING.name
    assert attention_implementation(config) == "sdpa"


def test_layers_are_the_positions_in_the_layout_and_none_elsewhere():
    attentions = [torch.nn.Identity() for _ in range(3)]
    with RECORDING.active(bare_layout(attentions), [], base="eager") as scope:
        assert [scope.layer(a) for a in attentions] == [0, 1, 2]
        assert scope.layer(torch.nn.Identity()) is None


def test_base_attention_is_the_models_eager_kernel_or_the_registered_one(tiny):
    attention = locate(tiny("llava").model).attentions[0]
    eager = sys.modules[type(attention).__module__].eager_attention_forward
    assert base_attention("eager", attention) is eager
    assert base_attention("sdpa", attention) is ALL_ATTENTION_FUNCTIONS["sdpa"]
