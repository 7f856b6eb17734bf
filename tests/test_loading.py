"""Loading a checkpoint folder: what is refused before or right after the load, in one line naming the file or
weight and the fix, instead of a library error deep in the loader or a model that answers nothing."""

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from functional_heads.models import loading
from functional_heads.models.loading import load_model, load_processor
from functional_heads.utils.errors import UserError


@pytest.fixture
def copy(qwen_folder, tmp_path):
    """A copy of the tiny Qwen2.5-VL folder to damage."""
    return shutil.copytree(qwen_folder, tmp_path / "model")


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        config[key] = value
        if key in config.get("text_config", {}):
            config["text_config"][key] = value
    (folder / "config.json").write_text(json.dumps(config))


def edit_weights(folder, change):
    file = folder / "model.safetensors"
    weights = load_file(file)
    change(weights)
    save_file(weights, file, metadata={"format": "pt"})


def refused(message, call, *args, **kwargs):
    with pytest.raises(UserError, match=message) as raised:
        call(*args, **kwargs)
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_the_intact_tied_checkpoint_loads(qwen_folder):
    """Tied weights (lm_head from the input embeddings) and buffers built at construction are not missing."""
    model = load_model(qwen_folder)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_a_config_that_unties_the_output_head_is_refused_naming_the_cause(copy):
    edit_config(copy, tie_word_embeddings=False)  # lm_head would be random: every answer garbage
    message = refused("lacks 1 weight", load_model, copy)
    assert "lm_head.weight" in message and "tie_word_embeddings" in message


def test_weights_the_checkpoint_lacks_are_refused_naming_them(copy):
    def drop(weights):
        for name in [n for n in weights if n.endswith("layers.1.mlp.down_proj.weight") or n.endswith("norm.weight")]:
            del weights[name]

    edit_weights(copy, drop)
    message = refused("the checkpoint lacks [0-9]+ weight", load_model, copy)
    assert "layers.1.mlp.down_proj.weight" in message or "norm.weight" in message
    assert "restore it" in message


def test_a_config_whose_shapes_the_weights_do_not_have_is_refused(copy):
    edit_config(copy, vocab_size=30)
    refused("config.json gives weight shapes the checkpoint does not have", load_model, copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(copy, value):
    name = "model.language_model.layers.2.self_attn.o_proj.weight"

    def poison(weights):
        key = next(k for k in weights if k.endswith("layers.2.self_attn.o_proj.weight"))
        weights[key][3, 5] = value

    edit_weights(copy, poison)
    message = refused("1 weight tensor.* hold NaN or infinite values", load_model, copy)
    assert name in message and "download or export it again" in message


def test_finite_float16_weights_whose_sum_overflows_are_not_refused(tmp_path):
    """The sum is only a quick screen: a float16 tensor whose sum overflows is checked value by value."""
    layer = torch.nn.Linear(4096, 64).half()
    with torch.no_grad():
        layer.weight.fill_(60000.0)
    assert not layer.weight.sum().isfinite()
    loading.check_finite_weights(tmp_path, layer)


def test_a_truncated_or_garbled_safetensors_file_is_named(copy):
    file = copy / "model.safetensors"
    whole = file.read_bytes()
    file.write_bytes(whole[:len(whole) // 2])
    message = refused("model.safetensors is truncated or damaged", load_model, copy)
    assert str(file) in message and "download or export it again" in message
    file.write_bytes(whole[:8] + b"x" * 16 + whole[24:])  # header bytes overwritten
    refused("model.safetensors is truncated or damaged .*header is not valid", load_model, copy)
    file.write_bytes(b"\xff" * 8 + whole[8:])  # header length overwritten
    refused("model.safetensors is truncated or damaged .*header claims", load_model, copy)


def test_a_shard_the_index_names_but_the_folder_lacks_is_named(copy):
    weights = load_file(copy / "model.safetensors")
    names = sorted(weights)
    half = len(names) // 2
    for shard, part in (("model-00001-of-00002.safetensors", names[:half]),
                        ("model-00002-of-00002.safetensors", names[half:])):
        save_file({n: weights[n] for n in part}, copy / shard, metadata={"format": "pt"})
    (copy / "model.safetensors").unlink()
    (copy / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f"model-0000{1 + (i >= half)}-of-00002.safetensors"
                                        for i, n in enumerate(names)}}))
    assert load_model(copy) is not None  # whole: it loads
    (copy / "model-00002-of-00002.safetensors").unlink()
    refused("lacks 1 of the 2 weight files its model.safetensors.index.json names .*model-00002-of-00002", load_model,
            copy)


def test_a_truncated_torch_zip_is_named(copy):
    weights = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(weights, copy / "pytorch_model.bin")
    whole = (copy / "pytorch_model.bin").read_bytes()
    (copy / "pytorch_model.bin").write_bytes(whole[:len(whole) - 100])
    refused("pytorch_model.bin is truncated or damaged", load_model, copy)


def test_a_folder_without_the_image_processor_settings_is_named(copy):
    (copy / "preprocessor_config.json").unlink()
    message = refused("has no preprocessor_config.json", load_processor, copy)
    assert "from the original checkpoint" in message


def test_a_text_only_model_is_refused_naming_what_is_needed(copy, tmp_path):
    text_only = tmp_path / "text_only"
    config = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=24)
    transformers.Qwen2ForCausalLM(config).save_pretrained(text_only)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(copy / name, text_only / name)
    for call in (load_processor, load_model):
        message = refused("'qwen2' model, a text-only language model: functional-heads needs a vision-language",
                          call, text_only)
        assert "qwen2_5_vl" in message  # the layouts it knows


def test_a_bad_dtype_is_refused(qwen_folder):
    refused("dtype 'float64' is not one of auto, float32, bfloat16, float16", load_model, qwen_folder, dtype="float64")


@pytest.mark.parametrize("device_map, cuda, hip, available, count, message", [
    ("cuda", None, None, False, 0, r"'cuda': this torch \(.*\) was built without CUDA. Install a CUDA build"),
    ({"": 0}, None, None, False, 0, "was built without CUDA"),
    ("cuda:0", "12.4", None, False, 0, "sees no cuda device here .*CUDA_VISIBLE_DEVICES"),
    ("cuda:2", "12.4", None, True, 2, r"only 2 cuda device\(s\) are visible"),
    ({"model": "cpu", "lm_head": "cuda:1"}, None, "6.2", True, 1, r"'cuda:1': only 1 cuda device"),
    ("gpu", None, None, False, 0, "'gpu' is not a device: give auto"),
])
def test_a_device_map_naming_a_device_torch_lacks_is_refused_before_loading(qwen_folder, monkeypatch, device_map, cuda,
                                                                             hip, available, count, message):
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.version, "hip", hip, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch, "accelerator", None, raising=False)  # an integer then means a CUDA device
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded"))
    refused(message, load_model, qwen_folder, device_map=device_map)


@pytest.mark.parametrize("device_map", [None, "auto", "cpu", {"": "cpu"}, "sequential"])
def test_device_maps_this_machine_has_are_accepted(device_map):
    loading.check_device_map(device_map)
