import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import functional_heads as fh
from functional_heads.apps.cli import app
from functional_heads.models.loading import load_model, load_processor, prompt_inputs

runner = CliRunner()
SETTINGS = ["--perc-last-layer", "1", "--reas-first-layer", "2", "--tau-perc", "0.5", "--tau-reas", "0.4",
            "--g-perc", "1.5", "--g-reas", "1.3"]


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    with open(folder / "calib.jsonl", "w") as f:
        for i, image in enumerate(images(5)):
            image.save(folder / f"{i}.png")
            f.write(json.dumps({"image": f"{i}.png", "prompt": "how many red shapes are there ?"}) + "\n")
    return folder / "calib.jsonl"


@pytest.mark.slow
def test_calibrate_inspect_export(qwen_folder, calib_file, tmp_path):
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out",
                                 str(tmp_path / "heads.json"), "--batch-size", "2", *SETTINGS])
    assert result.exit_code == 0, result.output
    heads = fh.HeadMap.load(tmp_path / "heads.json")
    assert heads.num_samples == 5 and heads.model_type == "qwen2_5_vl"
    assert heads.perception.any(), "random tiny models attend to the image well over 0.5 in shallow layers"

    model, processor = load_model(qwen_folder), load_processor(qwen_folder)
    rows = [json.loads(line) for line in calib_file.read_text().splitlines()]
    inputs = prompt_inputs(processor, [Image.open(calib_file.parent / r["image"]) for r in rows],
                           [r["prompt"] for r in rows])
    expected = fh.calibrate(model, [inputs], heads.config)
    torch.testing.assert_close(heads.ratios, expected.ratios, atol=1e-5, rtol=0)

    result = runner.invoke(app, ["inspect", str(tmp_path / "heads.json")])
    assert result.exit_code == 0, result.output
    n_perc = int(heads.perception.sum())
    assert f"perception: {n_perc} heads" in result.output and "selected" in result.output

    result = runner.invoke(app, ["export", "--model", str(qwen_folder), "--heads", str(tmp_path / "heads.json"),
                                 "--out", str(tmp_path / "folded")])
    assert result.exit_code == 0, result.output
    torch.save(inputs, tmp_path / "inputs.pt")
    plain = ("import sys, torch, transformers; assert 'functional_heads' not in sys.modules; "
             f"m = transformers.AutoModelForImageTextToText.from_pretrained(r'{tmp_path / 'folded'}').eval(); "
             f"x = torch.load(r'{tmp_path / 'inputs.pt'}'); "
             f"torch.save(m(**x).logits.detach(), r'{tmp_path / 'logits.pt'}'); "
             "assert 'functional_heads' not in sys.modules")
    subprocess.run([sys.executable, "-c", plain], check=True, capture_output=True)
    with torch.no_grad(), fh.rescale(model, heads):
        rescaled = model(**inputs).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), rescaled, atol=1e-5, rtol=0)
    assert (tmp_path / "folded" / "functional_heads.json").is_file()
    assert (tmp_path / "folded" / "tokenizer.json").is_file()


def test_export_keeps_every_config_key_of_the_original(tmp_path):
    """Saving drops keys that transformers 4.57 reads (e.g. text_config.rope_scaling beside rope_parameters);
    the exported folder keeps all of the original's."""
    from functional_heads.testbed.bundled import bundled_model_path

    def keys(data, prefix=""):
        out = set()
        for key, value in data.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, prefix + key + ".")
        return out

    source = bundled_model_path()
    heads = fh.HeadMap(torch.zeros(8, 8, dtype=torch.bool), torch.eye(8, dtype=torch.bool),
                       fh.RescaleConfig(0, 1, 0.9, 0.1, 1.0, 1.5))
    fh.export_folded(source, heads, tmp_path / "folded")
    original = json.loads((source / "config.json").read_text())
    exported = json.loads((tmp_path / "folded" / "config.json").read_text())
    assert "text_config.rope_scaling" in keys(original) and keys(original) <= keys(exported)


def test_clear_errors(qwen_folder, calib_file, tmp_path):
    result = runner.invoke(app, ["calibrate", "--model", str(tmp_path), "--data", str(calib_file), *SETTINGS])
    assert result.exit_code == 2 and "not a local model folder" in result.output
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file)])
    assert result.exit_code == 2 and "--settings or all of" in result.output
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file),
                                 "--preset", "ocean-r1"])
    assert result.exit_code == 2 and "perc_last_layer=7 is outside the model" in result.output
    (tmp_path / "bad.jsonl").write_text('{"image": "missing.png", "prompt": "hi"}\n')
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path / "bad.jsonl"),
                                 *SETTINGS])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output and "does not exist" in result.output
    result = runner.invoke(app, ["inspect", str(calib_file)])
    assert result.exit_code == 2 and "not a readable functional-heads head map" in result.output


@pytest.mark.parametrize("args, message", [
    (["--bench", "pope"], "pope needs --data"),
    (["--bench", "shapes", "--method", "agla"], "itm=PATH"),
    (["--bench", "shapes", "--method", "cgd", "--method-option", "clip=/nowhere"], "not a local model folder"),
    (["--bench", "shapes", "--method", "static", "--method-option", "alpha=1"], "takes none"),
    (["--bench", "shapes", "--method", "static"], "needs a head map"),
    (["--bench", "shapes", "--method", "beam"], "Unknown method"),
    (["--bench", "shapes", "--method", "vcd", "--method-option", "gamma=2"], "vcd has no setting gamma"),
    (["--bench", "nope"], "Unknown benchmark"),
    (["--bench", "shapes", "--judge-url", "http://localhost:8000/v1"], "needs both --judge-url and --judge-model"),
])
def test_eval_rejects_bad_requests_before_loading(tmp_path, args, message):
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path), "--out", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("method, option", [("agla", "itm"), ("cgd", "clip")])
def test_eval_runs_agla_and_cgd_with_the_models_given(method, option, blip_itm_folder, clip_folder, tmp_path):
    from functional_heads.testbed.bundled import bundled_model_path

    folder = {"itm": blip_itm_folder, "clip": clip_folder}[option]
    args = ["eval", "--model", str(bundled_model_path()), "--bench", "shapes", "--method", method,
            "--method-option", f"{option}={folder}", "--method-option", "alpha=1.5", "--limit", "3",
            "--batch-size", "2", "--max-new-tokens", "64", "--out", str(tmp_path)]
    if method == "agla":
        args += ["--method-option", "layer=1"]  # the tiny ITM model has 2 layers
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run, = tmp_path.iterdir()
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all("<answer>" in r["prediction"] and r["error"] is None for r in records)
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert settings[method][option] == str(folder) and settings[method]["alpha"] == 1.5


def _copy_model_files(source, folder, keep):
    folder.mkdir()
    for file in source.iterdir():
        if keep(file):
            (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_bad_inputs_are_one_line_errors_naming_the_fix(qwen_folder, calib_file, tmp_path):
    def fails(args, message):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output, result.output
        assert result.output.strip().count("\n") <= 3, result.output  # one error line (wrapped at most)

    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "rows.jsonl").write_text('{"image": "notes.txt", "prompt": "hi"}\n')
    fails(["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path / "rows.jsonl"), *SETTINGS],
          "rows.jsonl:1")
    fails(["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path / "missing.jsonl"), *SETTINGS],
          "missing.jsonl does not exist")
    config_only = _copy_model_files(qwen_folder, tmp_path / "config_only", lambda f: f.name == "config.json")
    fails(["calibrate", "--model", str(config_only), "--data", str(calib_file), *SETTINGS], "holds no tokenizer")
    no_weights = _copy_model_files(qwen_folder, tmp_path / "no_weights", lambda f: f.suffix != ".safetensors")
    fails(["calibrate", "--model", str(no_weights), "--data", str(calib_file), *SETTINGS], "no weights")
    corrupt = _copy_model_files(qwen_folder, tmp_path / "corrupt", lambda f: True)
    (corrupt / "config.json").write_text('{"model_type": "qwen2_5_vl",')
    fails(["calibrate", "--model", str(corrupt), "--data", str(calib_file), *SETTINGS],
          f"{corrupt / 'config.json'} is not a readable config.json")
    fails(["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out",
           str(tmp_path / "notes.txt" / "heads.json"), *SETTINGS], "Cannot write to")
    fails(["eval", "--model", str(qwen_folder), "--bench", "shapes", "--out", str(tmp_path / "notes.txt" / "runs")],
          "Cannot write to")
    (tmp_path / "empty.jsonl").write_text("")
    fails(["eval", "--model", str(qwen_folder), "--bench", "pope", "--data", str(tmp_path / "empty.jsonl"),
           "--out", str(tmp_path / "runs")], "holds no items")
    assert not (tmp_path / "runs").exists()  # a failed eval leaves no run folder behind


def test_hand_edited_or_foreign_head_maps_are_refused_before_the_model_loads(qwen_folder, calib_file, tmp_path,
                                                                             monkeypatch):
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out",
                                 str(tmp_path / "heads.json"), *SETTINGS])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "heads.json").read_text())
    data["ratios"] = data["ratios"][:2]  # a hand edit that no longer matches the stated shape
    (tmp_path / "edited.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["inspect", str(tmp_path / "edited.json")])
    assert result.exit_code == 2 and "ratios are [2, 4], not the stated [4, 4]" in result.output

    import functional_heads.evaluation.api as api

    monkeypatch.setattr(api.HFBackend, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    from functional_heads.testbed.bundled import bundled_model_path

    for command in (["eval", "--bench", "shapes", "--method", "static", "--out", str(tmp_path / "runs")],
                    ["export", "--out", str(tmp_path / "folded")],
                    ["verify", "--bench", "shapes", "--out", str(tmp_path / "verify")]):
        result = runner.invoke(app, [command[0], "--model", str(bundled_model_path()), "--heads",
                                     str(tmp_path / "heads.json"), *command[1:]])
        assert result.exit_code == 2 and "Calibrate on this model" in result.output, result.output
    assert not (tmp_path / "folded").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "verify").exists()


def test_unusual_share_of_heads_is_warned_about(tmp_path):
    from functional_heads.testbed.bundled import bundled_model_path

    assert runner.invoke(app, ["data", "shapes", "--out", str(tmp_path), "--split", "calib", "--n", "8"]).exit_code == 0
    result = runner.invoke(app, ["calibrate", "--model", str(bundled_model_path()), "--data",
                                 str(tmp_path / "calib.jsonl"), "--preset", "ocean-r1", "--out",
                                 str(tmp_path / "heads.json")])
    assert result.exit_code == 0, result.output
    share = fh.HeadMap.load(tmp_path / "heads.json").share_selected
    assert share > 0.5 and f"warning: the map selects {share:.0%} of all heads" in result.output


def test_debug_flag_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "inspect", str(tmp_path / "nothing.json")])
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)
