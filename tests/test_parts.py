import pytest
import torch

from functional_heads.models.architectures import vision_side
from functional_heads.models.parts import copy_vision_side
from functional_heads.testbed import tiny_models
from functional_heads.utils.errors import UserError


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def text_only(inputs):
    return {"input_ids": torch.randint(10, 290, inputs["input_ids"].shape), "attention_mask": inputs["attention_mask"]}


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
def test_the_swapped_model_sees_like_the_donor_and_reads_like_itself(arch):
    into, donor = tiny_models.build(arch, seed=0), tiny_models.build(arch, seed=1)
    with torch.no_grad():  # some projectors start at zero (Gemma 3's): make the donor's see something
        for module in vision_side(donor.model).values():
            for weight in module.parameters():
                weight.add_(0.05 * torch.randn_like(weight))
    inputs = into.inputs()
    text = text_only(inputs)
    own_text = logits(into.model, text)
    own_images = logits(into.model, inputs)
    decoder_before = {k: v.clone() for k, v in into.model.state_dict().items()
                      if not any(k.startswith(path + ".") for path in vision_side(into.model))}

    copy_vision_side(into.model, donor.model)

    for path, module in vision_side(into.model).items():  # every vision weight is the donor's
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, vision_side(donor.model)[path].state_dict()[name]), f"{path}.{name}"
    for name, tensor in into.model.state_dict().items():  # every other weight is its own
        if name in decoder_before:
            assert torch.equal(tensor, decoder_before[name]), name
    torch.testing.assert_close(logits(into.model, text), own_text)  # reads text as before
    assert not torch.allclose(logits(into.model, inputs), own_images)  # sees the image differently


def test_vision_side_swapped_back_restores_the_model():
    a, b = tiny_models.build("qwen2_5_vl", seed=0), tiny_models.build("qwen2_5_vl", seed=1)
    original = tiny_models.build("qwen2_5_vl", seed=0)
    inputs = a.inputs()
    copy_vision_side(a.model, b.model)
    copy_vision_side(a.model, original.model)
    torch.testing.assert_close(logits(a.model, inputs), logits(original.model, inputs), atol=0, rtol=0)


def test_different_architectures_or_sizes_are_refused():
    qwen, llava = tiny_models.build("qwen2_5_vl"), tiny_models.build("llava")
    with pytest.raises(UserError, match="one architecture"):
        copy_vision_side(qwen.model, llava.model)
    other = tiny_models.build("qwen2_5_vl")
    block = other.model.model.visual.blocks[0]
    block.mlp.down_proj = torch.nn.Linear(block.mlp.down_proj.in_features + 1, block.mlp.down_proj.out_features)
    with pytest.raises(UserError, match="differ in shape"):
        copy_vision_side(qwen.model, other.model)
