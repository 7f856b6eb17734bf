import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import functional_heads as fh
from functional_heads.apps.cli import app
from functional_heads.core.check import check_checkpoint, check_image
from functional_heads.models.architectures import vision_side
from functional_heads.models.kimi_vl import KimiVLImageProcessor, KimiVLProcessor, native_config
from functional_heads.models.loading import to_model_device
from functional_heads.models.parts import copy_vision_side
from functional_heads.testbed.tiny_models import save_tiny_kimi_vl

pytestmark = pytest.mark.skipif(not hasattr(transformers, "Kimi_K25Config"), reason="needs the native Kimi-K2.5 classes")
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["how many shapes are in the image ?", "what colour is the circle ?"]


@pytest.fixture(scope="module")
def kimi(tmp_path_factory):
    return save_tiny_kimi_vl(tmp_path_factory.mktemp("kimi_vl"))


def test_the_fixture_is_laid_out_as_kimi_vl_publishes_it(kimi):
    folder, _ = kimi
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "kimi_vl" and config["architectures"] == ["KimiVLForConditionalGeneration"]
    assert "init_pos_emb_height" in config["vision_config"] and "media_placeholder_token_id" in config
    keys = set(load_file(folder / "model.safetensors"))
    assert "vision_tower.encoder.blocks.0.wqkv.weight" in keys and "multi_modal_projector.linear_1.weight" in keys
    assert "language_model.model.layers.1.mlp.experts.3.up_proj.weight" in keys
    assert not any(key.startswith("model.") for key in keys)


def test_load_model_gives_the_native_model_with_every_weight_in_place(kimi):
    folder, native = kimi
    model = fh.load_model(folder, dtype=torch.float32)  # no trust_remote_code: nothing of Kimi-VL's code runs
    assert type(model).__name__ == "Kimi_K25ForConditionalGeneration" and model.config.model_type == "kimi_k25"
    assert not model.config.tie_word_embeddings
    loaded, expected = model.state_dict(), native.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)
    inputs = fh.prompt_inputs(fh.load_processor(folder), [check_image(), check_image(100)], PROMPTS)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, native(**inputs).logits)


def test_config_translation_renames_the_vision_fields_and_the_image_token(kimi):
    folder, _ = kimi
    config = native_config(json.loads((folder / "config.json").read_text()))
    assert (config.vision_config.pos_emb_height, config.vision_config.pos_emb_width) == (8, 8)
    assert config.image_token_id == 12 and config.projection_hidden_size == 32
    assert config.text_config.model_type == "deepseek_v3" and config.text_config.q_lora_rank is None


def test_a_checkpoint_missing_a_weight_is_a_clear_error(kimi, tmp_path):
    folder, _ = kimi
    for file in folder.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    weights = load_file(folder / "model.safetensors")
    del weights["multi_modal_projector.linear_2.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing_keys: model.mm_projector.out_proj.weight"):
        fh.load_model(tmp_path)


def test_processor_expands_each_image_into_its_merged_patches(kimi):
    folder, _ = kimi
    processor = fh.load_processor(folder)
    assert isinstance(processor, KimiVLProcessor)
    inputs = fh.prompt_inputs(processor, [check_image(224), Image.new("RGB", (100, 60))], PROMPTS)
    grids = inputs["image_grid_thw"]
    # 224 px: 256 patches > in_token_limit 64, so halved to 112 px (8x8); 100x60 padded to 112x84 (8x6)
    assert grids.tolist() == [[1, 8, 8], [1, 6, 8]]
    assert inputs["pixel_values"].shape == (64 + 48, 3, 14, 14)
    image_tokens = (inputs["input_ids"] == 12).sum(-1).tolist()
    assert image_tokens == [16, 12] and inputs["attention_mask"][:, 0].tolist() == [1, 0]  # left padded


def test_image_processor_follows_kimi_vl_rules():
    padded = KimiVLImageProcessor(pad_input=True)
    cropped = KimiVLImageProcessor(pad_input=False)
    image = Image.new("RGB", (100, 60), (255, 0, 0))
    assert padded.resized(image).size == (112, 84) and cropped.resized(image).size == (98, 56)
    tiles, grid = padded.patches(image)
    assert grid == (6, 8) and tiles.shape == (48, 3, 14, 14)
    red = (1 - 0.48145466) / 0.26862954
    assert tiles[0, 0].allclose(torch.full((14, 14), red)) and tiles[-1, 0].max() < 0  # padding is black
    limited = KimiVLImageProcessor(in_token_limit=16).resized(Image.new("RGB", (140, 140)))
    assert limited.size == (56, 56)
    with pytest.raises(ValueError, match="exceeds Kimi-VL's position embedding"):
        KimiVLImageProcessor().patches(Image.new("RGB", (512 * 14, 28)))


def test_the_method_works_on_it_and_fheads_check_says_so(kimi, tmp_path):
    folder, _ = kimi
    model = fh.load_model(folder, dtype=torch.float32)
    result = check_checkpoint(model, fh.load_processor(folder))
    assert result.ok and result.model_type == "kimi_k25" and result.sv_vs_eager < 1e-5, "\n".join(result.lines())
    cli = CliRunner().invoke(app, ["check", "--model", str(folder)])
    assert cli.exit_code == 0 and "verdict: works" in cli.output


def test_bfloat16_model_gets_its_pixels_in_bfloat16(kimi):
    folder, _ = kimi
    model = fh.load_model(folder, dtype=torch.bfloat16)
    inputs = to_model_device(fh.prompt_inputs(fh.load_processor(folder), [check_image()], PROMPTS[:1]),
                                        model)
    assert inputs["pixel_values"].dtype == torch.bfloat16 and inputs["input_ids"].dtype == torch.long
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


@pytest.mark.slow  # two fresh interpreters
def test_comparison_script_against_saved_remote_outputs(kimi, tmp_path):
    """The remote step needs Kimi-VL's code and transformers 4.48; its output file is made here from the
    native model, with Kimi-VL's input names, to check the prepare and compare steps."""
    folder, native = kimi
    script = ROOT / "scripts" / "compare_kimi_vl.py"
    subprocess.run([sys.executable, str(script), "prepare", str(tmp_path)], check=True, capture_output=True)
    processor = fh.load_processor(folder)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                          "text": json.loads((tmp_path / "prompt.json").read_text())["prompt"]}]}],
                                         add_generation_prompt=True)
    inputs = processor(images=[[Image.open(tmp_path / "image.png").convert("RGB")]], text=[text], return_tensors="pt")
    with torch.no_grad():
        logits = native(**inputs).logits
    remote = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
              "pixel_values": inputs["pixel_values"], "image_grid_hws": inputs["image_grid_thw"][:, 1:]}
    torch.save({"inputs": remote, "logits": logits, "text": text}, tmp_path / "remote.pt")
    subprocess.run([sys.executable, str(script), "compare", str(folder), str(tmp_path)], check=True,
                   capture_output=True)
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert result["logits_max_abs_diff"] == 0 and result["top1_agreement"] == 1
    assert result["processor_same_input_ids"] and result["processor_pixel_max_abs_diff"] == 0


def test_its_vision_side_swaps_between_two_copies(kimi):
    folder, _ = kimi
    into, donor = fh.load_model(folder, dtype=torch.float32), fh.load_model(folder, dtype=torch.float32)
    sides = vision_side(donor)
    assert set(sides) == {"model.vision_tower", "model.mm_projector"}
    with torch.no_grad():
        for weight in sides["model.mm_projector"].parameters():
            weight.mul_(2)
    copy_vision_side(into, donor)
    assert all(torch.equal(a, b) for a, b in zip(vision_side(into)["model.mm_projector"].state_dict().values(),
                                                 sides["model.mm_projector"].state_dict().values()))
