import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import functional_heads.core.ratios as ratios_module
from functional_heads.apps.cli import app
from functional_heads.core.check import check_model, eager_ratios
from functional_heads.testbed.tiny_models import ARCHS
from functional_heads.utils.errors import UserError


def batch_and_rows(t):
    return t.inputs(), [t.inputs(prompt_lens=[n], samples=[b]) for b, n in enumerate((5, 9))]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_check_passes_on_the_tiny_architectures(tiny, arch):
    t = tiny(arch)
    result = check_model(t.model, *batch_and_rows(t))
    assert result.ok, "\n".join(result.lines())
    assert result.sv_vs_eager < 1e-5 and result.batch_vs_single < 1e-5 and result.fold_vs_hooks < 1e-5
    assert result.rescale_effect > 1e-3 and result.unfold_restores == 0 and 0 < result.sv_max <= 1


def test_eager_reference_rows_sum_image_columns_of_a_distribution(tiny):
    t = tiny("qwen2_5_vl")
    reference = eager_ratios(t.model, t.inputs())
    assert reference.shape == (2, 4, 4) and not reference.isnan().any()
    assert ((reference >= 0) & (reference <= 1 + 1e-6)).all()


def test_a_wrong_probe_is_caught(tiny, monkeypatch):
    """The check can fail: a probe with the wrong softmax temperature is reported as not exact."""
    real = ratios_module.query_row_attention
    monkeypatch.setattr(ratios_module, "query_row_attention",
                        lambda query, key, mask, rows, scaling, softcap=None, sinks=None: real(query, key, mask, rows, 2 * scaling))
    t = tiny("llava")
    result = check_model(t.model, *batch_and_rows(t))
    assert not result.sv_exact and not result.ok and result.sv_vs_eager > 1e-3
    assert "does NOT work" in result.lines()[-1] and any(line.startswith("FAIL") for line in result.lines())


def test_check_leaves_the_model_and_process_as_they_were(tiny):
    t = tiny("gemma3")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    implementation = t.model.config.get_text_config()._attn_implementation
    rng, grad = torch.get_rng_state(), torch.is_grad_enabled()
    check_model(t.model, *batch_and_rows(t))
    assert torch.equal(rng, torch.get_rng_state()) and torch.is_grad_enabled() == grad
    assert t.model.config.get_text_config()._attn_implementation == implementation
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    assert not any(m._forward_pre_hooks for m in t.model.modules())


def test_cli_check_prints_the_verdict_and_writes_json(qwen_folder, tmp_path):
    out = tmp_path / "check.json"
    result = CliRunner().invoke(app, ["check", "--model", str(qwen_folder), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "verdict: works" in result.output and "S_v probe vs eager" in result.output
    measured = json.loads(out.read_text())
    assert measured["ok"] and measured["model_type"] == "qwen2_5_vl" and measured["sv_vs_eager"] < 1e-5


def test_cli_check_on_a_folder_without_a_model_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["check", "--model", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a local model folder" in result.output and "Traceback" not in result.output


def test_cli_check_on_an_unknown_layout_says_what_to_add(qwen_folder, monkeypatch):
    from functional_heads.models.architectures import ARCHITECTURES, ArchSpec

    monkeypatch.setitem(ARCHITECTURES, "qwen2_5_vl", ArchSpec(layers="blocks"))
    result = CliRunner().invoke(app, ["check", "--model", str(qwen_folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Add an ArchSpec" in result.output and "fheads check --model PATH" in result.output
    assert "layers='blocks'" in result.output


def test_cli_check_says_a_folder_is_a_folded_export(qwen_folder, tmp_path):
    import functional_heads as fh

    perception = torch.zeros(4, 4, dtype=torch.bool)
    perception[0, 1] = True
    heads = fh.HeadMap(perception, torch.zeros_like(perception), fh.RescaleConfig(1, 2, 0.5, 0.1, 1.5, 1.0))
    folded = fh.export_folded(qwen_folder, heads, tmp_path / "folded")
    out = tmp_path / "check.json"
    result = CliRunner().invoke(app, ["check", "--model", str(folded), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "folded export: gains g_perc=1.5, g_reas=1.0 on 1 heads are already in its o_proj weights" in result.output
    assert "verdict: works" in result.output
    assert json.loads(out.read_text())["folded"]["gains"] == {"g_perc": 1.5, "g_reas": 1.0}
    result = CliRunner().invoke(app, ["check", "--model", str(qwen_folder)])
    assert result.exit_code == 0 and "folded export" not in result.output


def test_cli_check_json_never_replaces_a_file_unasked(qwen_folder, tmp_path):
    out = tmp_path / "check.json"
    out.write_text("mine")
    result = CliRunner().invoke(app, ["check", "--model", str(qwen_folder), "--json", str(out)])
    assert result.exit_code == 2 and f"--json {out} already exists" in " ".join(result.output.split())
    assert out.read_text() == "mine"
    result = CliRunner().invoke(app, ["check", "--model", str(qwen_folder), "--json", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    result = CliRunner().invoke(app, ["check", "--model", str(qwen_folder), "--json", str(out), "--overwrite"])
    assert result.exit_code == 0 and json.loads(out.read_text())["ok"] and json.loads(out.read_text())["folded"] is None


def test_non_finite_attention_is_named_as_such_not_as_remote_code(tiny):
    """S_v recorded as NaN (a float16 overflow, a NaN weight) is not attention the probe failed to see."""
    t = tiny("qwen2_5_vl")
    weight = t.model.model.language_model.layers[1].self_attn.q_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] = float("nan")
        with pytest.raises(UserError, match=r"attention is NaN or infinite in layers \[1, 2, 3\]") as raised:
            check_model(t.model, *batch_and_rows(t))
        assert "remote code" not in str(raised.value) and "--dtype" in str(raised.value)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


@pytest.mark.parametrize("damage, cause", [
    ("untied", "lacks 1 weight.*lm_head.weight.*tie_word_embeddings false"),
    ("nan", r"hold NaN or infinite values \(model.language_model.layers.0.mlp.up_proj.weight\)"),
])
def test_cli_check_names_missing_or_non_finite_weights_not_remote_code(qwen_folder, tmp_path, damage, cause):
    folder = shutil.copytree(qwen_folder, tmp_path / "model")
    if damage == "untied":
        config = json.loads((folder / "config.json").read_text())
        config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = False
        (folder / "config.json").write_text(json.dumps(config))
    else:
        weights = load_file(folder / "model.safetensors")
        weights[next(k for k in weights if k.endswith("layers.0.mlp.up_proj.weight"))][0] = float("nan")
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    result = CliRunner().invoke(app, ["check", "--model", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert re.search(cause, result.output.replace("\n", " ")) and "remote code" not in result.output, result.output
