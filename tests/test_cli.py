import json
import os
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
    assert result.output.count("warning: the map selects") == 1  # the library's warning and the command's: one line


def test_debug_flag_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "inspect", str(tmp_path / "nothing.json")])
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)


def _tiny_heads(path, g_perc=1.5, g_reas=1.25):
    perception, reasoning = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    perception[0, :2] = True
    reasoning[3, 1] = True
    fh.HeadMap(perception, reasoning, fh.RescaleConfig(1, 2, 0.5, 0.1, g_perc, g_reas), "qwen2_5_vl").save(path)
    return path


def _one_line_error(result, message):
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output, result.output
    assert result.output.strip().count("\n") <= 3, result.output


def test_export_refuses_a_non_empty_out_unless_overwrite(qwen_folder, tmp_path):
    heads = _tiny_heads(tmp_path / "heads.json")
    out = tmp_path / "theirs"
    out.mkdir()
    for i in range(1, 7):
        (out / f"model-{i:05d}-of-00006.safetensors").write_text(f"shard {i}")
    (out / "model.safetensors.index.json").write_text("{}")
    (out / "config.json").write_text("{}")
    before = sorted(p.name for p in out.iterdir())
    args = ["export", "--model", str(qwen_folder), "--heads", str(heads), "--out", str(out)]
    _one_line_error(runner.invoke(app, args), f"--out {out} is not empty (it holds a checkpoint): choose a new or "
                                              "empty folder, or pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == before
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors.index.json" not in names and not any(n.startswith("model-0") for n in names)
    assert {"config.json", "functional_heads.json", "model.safetensors"} <= names


def test_calibrate_out_an_existing_file_says_so(qwen_folder, calib_file, tmp_path):
    (tmp_path / "heads.json").write_text("my notes")
    args = ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out", str(tmp_path / "heads.json"),
            *SETTINGS]
    _one_line_error(runner.invoke(app, args), f"--out {tmp_path / 'heads.json'} already exists: choose a new name, "
                                              "or pass --overwrite")
    assert (tmp_path / "heads.json").read_text() == "my notes"
    _one_line_error(runner.invoke(app, [*args[:6], str(tmp_path), *SETTINGS]), "is a folder: give the path of the file")
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert fh.HeadMap.load(tmp_path / "heads.json").num_samples == 5


@pytest.mark.parametrize("command, out_flag", [
    (["eval", "--bench", "shapes"], "--out"),
    (["report"], "--out"),
    (["data", "shapes", "--split", "calib", "--n", "1"], "--out"),
    (["demo", "--limit", "8"], "--out"),
])
def test_every_out_that_is_a_file_is_named_as_a_file(command, out_flag, qwen_folder, tmp_path):
    (tmp_path / "taken").write_text("mine")
    model = ["--model", str(qwen_folder)] if command[0] == "eval" else []
    result = runner.invoke(app, [*command, *model, out_flag, str(tmp_path / "taken")])
    _one_line_error(result, f"{out_flag} {tmp_path / 'taken'} is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("flag, message", [
    (["--g-perc", "inf"], "g_perc=inf is invalid: it must be a finite number > 0"),
    (["--g-reas", "nan"], "g_reas=nan is invalid"),
    (["--g-perc", "1e30"], "g_perc=1e+30 is invalid: it must lie in [0.1, 10]"),
    (["--g-perc", "-1"], "g_perc=-1.0 is invalid"),
])
def test_calibrate_refuses_gains_that_are_not_usable_numbers(flag, message, qwen_folder, calib_file, tmp_path):
    args = ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out", str(tmp_path / "h.json"),
            *SETTINGS]
    _one_line_error(runner.invoke(app, [*args, *flag]), message)
    assert not (tmp_path / "h.json").exists()


def test_extreme_gains_need_the_flag_and_the_map_keeps_it(qwen_folder, calib_file, tmp_path):
    args = ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out", str(tmp_path / "h.json"),
            *SETTINGS, "--g-perc", "20"]
    _one_line_error(runner.invoke(app, args), "--allow-extreme-gains")
    result = runner.invoke(app, [*args, "--allow-extreme-gains"])
    assert result.exit_code == 0, result.output
    assert fh.HeadMap.load(tmp_path / "h.json").config.g_perc == 20.0
    result = runner.invoke(app, ["inspect", str(tmp_path / "h.json")])
    assert result.exit_code == 0 and "gain 20.0" in result.output, result.output
    data = json.loads((tmp_path / "h.json").read_text())
    data["config"]["allow_extreme_gains"] = False
    (tmp_path / "h.json").write_text(json.dumps(data))
    _one_line_error(runner.invoke(app, ["inspect", str(tmp_path / "h.json")]), "g_perc=20.0 is invalid")
    (tmp_path / "h.json").write_text(json.dumps(data).replace("20.0", "Infinity"))
    _one_line_error(runner.invoke(app, ["inspect", str(tmp_path / "h.json")]), "it holds Infinity")


def test_maps_and_settings_that_change_nothing_are_warned_about(qwen_folder, calib_file, tmp_path, monkeypatch):
    """The bundled models' settings.json holds gains of 1 (tuning confirmed nothing): every command says so."""
    import functional_heads.evaluation.api as api

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"config": fh.RescaleConfig(1, 2, 0.5, 0.4).to_dict(), "confirmed": False}))
    heads = tmp_path / "heads.json"
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out",
                                 str(heads), "--settings", str(settings)])
    assert result.exit_code == 0, result.output
    assert "warning: the head map changes nothing: its gains are 1 (g_perc=1, g_reas=1)" in result.output
    result = runner.invoke(app, ["inspect", str(heads)])
    assert result.exit_code == 0 and f"warning: {heads} changes nothing: its gains are 1" in result.output
    result = runner.invoke(app, ["export", "--model", str(qwen_folder), "--heads", str(heads), "--out",
                                 str(tmp_path / "folded")])
    assert result.exit_code == 0 and "warning: the head map changes nothing" in result.output, result.output

    def stop(*args, **kwargs):
        raise fh.utils.errors.UserError("stopped before loading")

    monkeypatch.setattr(api.HFBackend, "load", stop)
    for method in ("static", "reasoning-only"):
        result = runner.invoke(app, ["eval", "--model", str(qwen_folder), "--bench", "shapes", "--method", method,
                                     "--heads", str(heads), "--out", str(tmp_path / "runs")])
        assert f"warning: method {method}'s head map changes nothing" in result.output, result.output
    _tiny_heads(tmp_path / "useful.json")
    result = runner.invoke(app, ["eval", "--model", str(qwen_folder), "--bench", "shapes", "--method",
                                 "perception-only", "--heads", str(tmp_path / "useful.json"), "--out",
                                 str(tmp_path / "runs")])
    assert "warning" not in result.output and "stopped before loading" in result.output, result.output


def test_a_folded_export_is_not_rescaled_again_unless_asked(qwen_folder, calib_file, tmp_path, monkeypatch):
    import functional_heads.evaluation.api as api

    heads = _tiny_heads(tmp_path / "heads.json")
    folded = tmp_path / "folded"
    assert runner.invoke(app, ["export", "--model", str(qwen_folder), "--heads", str(heads), "--out",
                               str(folded)]).exit_code == 0

    def stop(*args, **kwargs):
        raise fh.utils.errors.UserError("stopped before loading")

    monkeypatch.setattr(api.HFBackend, "load", stop)
    evaluate = ["eval", "--model", str(folded), "--bench", "shapes", "--out", str(tmp_path / "runs")]
    message = f"{folded} is a folded export (gains g_perc=1.5, g_reas=1.25 on 3 heads are already in its weights)"
    for args in ([*evaluate, "--method", "static", "--heads", str(heads)], [*evaluate, "--method", "dynamic",
                                                                            "--heads", str(heads)],
                 ["calibrate", "--model", str(folded), "--data", str(calib_file), *SETTINGS, "--out",
                  str(tmp_path / "h2.json")],
                 ["export", "--model", str(folded), "--heads", str(heads), "--out", str(tmp_path / "twice")]):
        _one_line_error(runner.invoke(app, args), message)
    assert "stopped before loading" in runner.invoke(app, [*evaluate, "--method", "vanilla"]).output
    result = runner.invoke(app, [*evaluate, "--method", "static", "--heads", str(heads), "--allow-folded"])
    assert "stopped before loading" in result.output, result.output
    result = runner.invoke(app, ["calibrate", "--model", str(folded), "--data", str(calib_file), *SETTINGS, "--out",
                                 str(tmp_path / "h2.json"), "--allow-folded"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "twice").exists()


def test_a_device_map_torch_cannot_use_is_one_line_before_loading(qwen_folder, calib_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build, whatever this machine has
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    for args in (["eval", "--model", str(qwen_folder), "--bench", "shapes", "--out", str(tmp_path / "runs")],
                 ["calibrate", "--model", str(qwen_folder), "--data", str(calib_file), "--out",
                  str(tmp_path / "heads.json"), *SETTINGS]):
        result = runner.invoke(app, args + ["--device-map", "cuda"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.count("error:") == 1 and "was built without CUDA" in result.output, result.output
        assert "--device-map cpu" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "heads.json").exists()


def test_eval_warns_once_about_prompts_longer_than_the_context_and_records_them_unusable(tmp_path):
    from functional_heads.testbed.bundled import bundled_model_path

    folder = _copy_model_files(bundled_model_path(), tmp_path / "model", lambda f: f.is_file())
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 30  # shapes prompts hold 22 to 40 tokens
    (folder / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["eval", "--model", str(folder), "--bench", "shapes", "--split", "dev", "--limit", "8",
                                 "--max-new-tokens", "8", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "2 item(s) with a prompt longer than the model's context" in warnings[0]
    assert "item dev-000006: prompt of 35 tokens, longer than the model's context (30 tokens)" in warnings[0]
    assert "8 items (2 unusable)" in result.output


def test_the_command_line_and_the_package_import_without_torch_or_transformers():
    """`fheads --help` reads only light modules: each command imports what it runs."""
    code = ("import sys, functional_heads, functional_heads.apps.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'optuna', 'vllm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
    help_text = subprocess.run([sys.executable, "-m", "functional_heads.apps.cli", "eval", "--help"],
                               capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert help_text.returncode == 0 and "perception-only" in help_text.stdout and "mathvista" in help_text.stdout


def test_the_help_lists_every_built_in_method_and_dtype():
    from functional_heads.apps import cli
    from functional_heads.evaluation.methods import METHODS
    from functional_heads.models.loading import DTYPES

    builtin = [name for name, cls in METHODS.items() if cls.__module__.startswith("functional_heads.")]
    assert sorted(cli.BUILTIN_METHODS) == sorted(builtin) and all(d in cli.DTYPE_HELP for d in DTYPES)


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"functional-heads {version('functional-heads')}"


def test_calibrate_skips_images_the_model_cannot_take_with_one_warning_and_counts_them(qwen_folder, calib_file,
                                                                                      tmp_path, monkeypatch):
    """A 1x4000 PNG (the processor's aspect-ratio limit) or a header claiming 20000x20000 (Pillow's bomb guard)
    stopped calibrate for good, naming no file."""
    import io
    import zlib

    Image.new("RGB", (1, 4000)).save(tmp_path / "thin.png")
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    bomb = bytearray(buffer.getvalue())
    bomb[16:24] = (20000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(bytes(bomb))
    good = [json.loads(line) for line in calib_file.read_text().splitlines()]
    rows = [{**r, "image": str(calib_file.parent / r["image"])} for r in good]
    rows[1:1] = [{"image": "thin.png", "prompt": "hi"}, {"image": "bomb.png", "prompt": "hi"}]
    (tmp_path / "mixed.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path / "mixed.jsonl"),
                                 "--out", str(tmp_path / "heads.json"), *SETTINGS])
    assert result.exit_code == 0, result.output
    assert fh.HeadMap.load(tmp_path / "heads.json").num_samples == 5  # the usable ones; a BOM is fine
    assert "skipped 2 of 7 calibration items" in result.output, result.output
    assert f"mixed.jsonl:2: image {tmp_path / 'thin.png'}: the model's processor refuses it" in result.output
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path / "mixed.jsonl"),
                                 "--limit", "2", "--out", str(tmp_path / "two.json"), *SETTINGS])
    assert result.exit_code == 0 and fh.HeadMap.load(tmp_path / "two.json").num_samples == 2, result.output

    import functional_heads.core.heads as heads

    monkeypatch.setattr(heads, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "mostly_bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data",
                                 str(tmp_path / "mostly_bad.jsonl"), *SETTINGS])
    assert result.exit_code == 2 and "2 of 3 calibration items have no image the model can take" in result.output
    assert "mostly_bad.jsonl:2" in result.output and "fix or remove them" in result.output


@pytest.mark.parametrize("content, message", [
    (b'{"image": "a.png", "prompt": "hi"}\n{"image": "b.png", "prompt": "caf\xe9"}\n', "lines.jsonl:2: not UTF-8"),
    (b'{"image": "a.png", "prompt": "hi"}\n["a.png", "hi"]\n', "lines.jsonl:2: a JSON list, not an object"),
    (b'{"image": "a.png", "prompt": "hi"}\n{"prompt": "hi"}\n', "lines.jsonl:2: no 'image' path"),
    (b'{"image": "a.png", "prompt": "hi"}\n{"image": "a.png", \n', "lines.jsonl:2: not valid JSON"),
])
def test_calibrate_names_the_line_of_a_prompts_file_it_cannot_read(qwen_folder, tmp_path, content, message):
    images(1)[0].save(tmp_path / "a.png")  # line 1 is a good row
    (tmp_path / "lines.jsonl").write_bytes(content)
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path / "lines.jsonl"),
                                 *SETTINGS])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_calibrate_given_a_folder_says_it_wants_the_file_in_it(qwen_folder, tmp_path):
    assert runner.invoke(app, ["data", "shapes", "--out", str(tmp_path), "--split", "calib", "--n", "2"]).exit_code == 0
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_folder), "--data", str(tmp_path), *SETTINGS])
    assert result.exit_code == 2 and f"{tmp_path} is a folder" in result.output, result.output
    assert str(tmp_path / "calib.jsonl") in result.output and "does not exist" not in result.output


def _without(monkeypatch, *packages):
    """As if these packages were not installed: importing them fails and `is_available` says so."""
    import sys

    for name in packages:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("command, packages, message", [
    ("eval-parquet", ["pyarrow"], "needs pyarrow: pip install 'functional-heads[eval]'"),
    ("eval-saved", ["datasets"], "needs datasets: pip install 'functional-heads[eval]'"),
    ("eval-siglip", ["sentencepiece", "google.protobuf"], "CGD's SigLIP tokenizer needs sentencepiece, "
                                                          "google.protobuf: pip install 'functional-heads[eval]'"),
    ("calibrate-spm", ["sentencepiece", "google.protobuf"], "(a SentencePiece tokenizer.model) needs sentencepiece, "
                                                            "google.protobuf: pip install 'functional-heads[eval]'"),
    ("tune-parquet", ["pyarrow"], "needs pyarrow: pip install 'functional-heads[eval]'"),
    ("tune-optuna", ["optuna"], "fheads tune needs optuna: pip install 'functional-heads[tune]'"),
])
def test_a_missing_extra_is_named_before_any_model_loads(qwen_folder, calib_file, tmp_path, monkeypatch, command,
                                                         packages, message):
    """`eval` on parquet without pyarrow printed `error: ModuleNotFoundError` (exit 1) after the model loaded."""
    import transformers

    import functional_heads.core.heads as heads
    import functional_heads.evaluation.api as api
    import functional_heads.tuning.study as study

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for module in (heads, study):
        monkeypatch.setattr(module, "load_model", loaded)
    monkeypatch.setattr(api.HFBackend, "load", loaded)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", loaded)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev.parquet").write_bytes(b"PAR1")  # never opened: the extra is checked first
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_dict.json").write_text('{"splits": ["test"]}')
    transformers.SiglipConfig().save_pretrained(tmp_path / "siglip")
    spm = _copy_model_files(qwen_folder, tmp_path / "spm", lambda f: f.name != "tokenizer.json")
    (spm / "tokenizer.model").write_bytes(b"a SentencePiece model")
    model = ["--model", str(qwen_folder)]
    args = {"eval-parquet": ["eval", *model, "--bench", "pope", "--data", str(tmp_path / "data")],
            "eval-saved": ["eval", *model, "--bench", "pope", "--data", str(tmp_path / "saved")],
            "eval-siglip": ["eval", *model, "--bench", "shapes", "--method", "cgd", "--method-option",
                            f"clip={tmp_path / 'siglip'}"],
            "calibrate-spm": ["calibrate", "--model", str(spm), "--data", str(calib_file), *SETTINGS],
            "tune-parquet": ["tune", *model, "--bench", "pope", "--data", str(tmp_path / "data")],
            "tune-optuna": ["tune", *model, "--bench", "pope", "--data", str(tmp_path / "data")]}[command]
    if command == "tune-parquet":
        pytest.importorskip("optuna", reason="fheads tune needs the tune extra (optuna)")
    _without(monkeypatch, *packages)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("error:") == 1, result.output
    assert not (tmp_path / "out").exists()


def test_tune_says_before_its_work_that_figures_will_be_skipped(monkeypatch, tmp_path):
    import functional_heads.tuning.study as study
    from functional_heads.utils import plotting
    from functional_heads.utils.errors import UserError

    def started(*args, **kwargs):
        raise UserError("the study started")

    monkeypatch.setattr(plotting, "available", lambda: False)
    monkeypatch.setattr(study, "tune", started)
    result = runner.invoke(app, ["tune", "--model", str(tmp_path), "--bench", "shapes", "--out", str(tmp_path)])
    warning = result.output.find("warning: figures skipped: matplotlib is not installed")
    assert 0 <= warning < result.output.find("the study started"), result.output


def test_eval_refuses_duplicate_ids_before_loading_and_names_what_it_set_aside(tmp_path, monkeypatch):
    from functional_heads.evaluation.benchmarks import shapes_generator as shapes
    from functional_heads.testbed.bundled import bundled_model_path

    data = shapes.write_split("dev", tmp_path / "data", n=3)
    rows = data.read_text().splitlines()
    thin = json.loads(rows[1])["image"]
    Image.new("RGB", (4000, 1)).save(tmp_path / "data" / thin)  # beyond the processor's aspect-ratio limit
    eval_args = ["eval", "--model", str(bundled_model_path()), "--bench", "shapes", "--max-new-tokens", "8",
                 "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*eval_args, "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "3 items (1 unusable)" in result.output and "warning: 1 unusable items were set aside" in result.output
    assert f"{data}:2): image {tmp_path / 'data' / thin}: the model's processor refuses it" in result.output

    import functional_heads.evaluation.api as api

    monkeypatch.setattr(api.HFBackend, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "twice.jsonl").write_text("\n".join([rows[0], rows[1], rows[0]]) + "\n")
    result = runner.invoke(app, [*eval_args, "--data", str(tmp_path / "twice.jsonl")])
    assert result.exit_code == 2, result.output
    assert "twice.jsonl:3: item id" in result.output and "twice.jsonl:1" in result.output
