"""The bundled model and `fheads demo` (a short run on a few test items)."""

import json

import pytest
import transformers
from typer.testing import CliRunner

import functional_heads as fh
from functional_heads.bundled import bundled_model_path, bundled_settings
from functional_heads.cli import app
from functional_heads.demo import METHODS
from functional_heads.evaluation import shapes
from functional_heads.evaluation.runner import answer


def test_bundled_model_loads_offline_and_answers_in_format():
    path = bundled_model_path()
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = fh.load_processor(path)
    assert model.config.model_type == "qwen2_5_vl" and fh.locate(model).num_layers == 8
    items = list(shapes.items("dev"))[:28]
    outputs, _ = answer(model, processor, [it.scene.render() for it in items], [it.question for it in items])
    assert all(o.startswith("<think>") and o.endswith("</answer>") for o in outputs), outputs
    outcomes = [shapes.score(it, o) for it, o in zip(items, outputs)]
    # Trained: every answer is a well-formed chain (an untrained model writes no tagged answer at all), and
    # well over half are right (17 of these 28; the model card reports 66% on test).
    assert not any(o.error == "malformed" for o in outcomes)
    assert sum(o.correct for o in outcomes) >= 14
    assert bundled_settings().tau_reas < bundled_settings().tau_perc


def test_short_demo_run_writes_report_and_figures(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--limit", "16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "demo.json").read_text())
    assert list(report["methods"]) == list(METHODS)
    for name, r in report["methods"].items():
        assert r["n"] == 16
        total = r["accuracy"] + r["perceptual_error_rate"] + r["reasoning_drift_rate"] + r["malformed_rate"]
        assert total == pytest.approx(1.0)
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert (name == "vanilla") == ("mcnemar_vs_vanilla" not in r)
    assert report["settings_tuned_on"] == "dev" and report["reported_on"] == "test (16 items)"
    assert report["methods"]["vanilla"]["heads_rescaled"] == 0.0
    heads = fh.HeadMap.load(tmp_path / "heads.json")
    gains = heads.gains  # heads whose gain is not 1 (a class with gain 1 is selected but not rescaled)
    assert report["methods"]["static"]["heads_rescaled"] == pytest.approx((gains != 1).float().mean().item())
    for name in ("demo.md", "ratios_heatmap.png", "ratios_by_layer.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| static |" in (tmp_path / "demo.md").read_text()


def test_data_shapes_command(tmp_path):
    result = CliRunner().invoke(app, ["data", "shapes", "--out", str(tmp_path), "--split", "test", "--n", "7"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [it.id for it in shapes.items("test", n=7)]
