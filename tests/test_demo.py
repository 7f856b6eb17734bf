"""The bundled model and `fheads demo` (a short run on a few test items)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers
from typer.testing import CliRunner

import functional_heads as fh
from functional_heads.apps.cli import app
from functional_heads.apps.demo import METHODS
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.engine import Decoding, HFBackend, answer_all
from functional_heads.evaluation.methods import get_method
from functional_heads.evaluation.report import build_report
from functional_heads.evaluation.runs import Run
from functional_heads.testbed.bundled import bundled_model_path, bundled_settings, bundled_tuning
from functional_heads.utils import plotting


def test_bundled_model_loads_offline_and_answers_in_format():
    path = bundled_model_path()
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = fh.load_processor(path)
    assert model.config.model_type == "qwen2_5_vl" and fh.locate(model).num_layers == 8
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:28]
    records = answer_all(HFBackend(model, processor), bench, examples, get_method("vanilla"),
                         Decoding(max_new_tokens=64), 64)
    assert all(r["prediction"].startswith("<think>") and r["prediction"].endswith("</answer>") for r in records)
    # Trained: every answer is a well-formed chain (an untrained model writes no tagged answer at all), and
    # well over half are right (17 of these 28; the model card reports 66% on test).
    assert not any(r["failure"] == "malformed" for r in records)
    assert sum(r["score"] for r in records) >= 14


@pytest.mark.parametrize("name", ["shapes-r1-tiny", "shapes-r1-tiny-reasoning"])
def test_bundled_settings_are_a_tune_study_result_with_its_confirmation(name):
    path = fh.bundled_model_path(name)
    tuning = bundled_tuning(path)
    result, candidate = bundled_settings(path), bundled_settings(path, candidate=True)
    assert tuning["verdict"].startswith(("confirmed", "not confirmed"))
    assert tuning["confirmation"]["items"] == 200 and "search part (200 items)" in tuning["tuned_on"]
    if tuning["confirmed"]:
        assert result == candidate
    else:  # nothing confirmed: the shipped result is vanilla, the candidate keeps its gains
        assert (result.g_perc, result.g_reas) == (1.0, 1.0) and (candidate.g_perc, candidate.g_reas) != (1.0, 1.0)


@pytest.mark.slow
def test_short_demo_run_writes_report_figures_and_run_folders_that_report_reads(tmp_path):
    grad = torch.is_grad_enabled()
    result = CliRunner().invoke(app, ["demo", "--limit", "16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert torch.is_grad_enabled() == grad  # the demo leaves the caller's grad mode alone
    report = json.loads((tmp_path / "demo.json").read_text())
    shapes_report = report["shapes"]
    assert list(shapes_report["methods"]) == list(METHODS) and shapes_report["items"] == 16
    for name, r in shapes_report["methods"].items():
        assert r["n"] == 16
        assert r["accuracy"] + r["perceptual_rate"] + r["drift_rate"] + r["malformed_rate"] == pytest.approx(1.0)
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert (name == "vanilla") == ("mcnemar_vs_vanilla" not in r)
    assert report["settings_tuned_on"] == "dev" and report["reported_on"] == "test (16 items)"
    assert shapes_report["methods"]["vanilla"]["heads_rescaled"] == 0.0
    heads = fh.HeadMap.load(tmp_path / "heads.json")
    gains = heads.gains  # heads whose gain is not 1 (a class with gain 1 is selected but not rescaled)
    assert shapes_report["methods"]["static"]["heads_rescaled"] == pytest.approx((gains != 1).float().mean().item())
    assert (tmp_path / "demo.md").stat().st_size > 0
    for name in ("ratios_heatmap.png", "ratios_by_layer.png", "report.png"):  # figures need the plot extra
        assert (tmp_path / name).is_file() == plotting.available()
    assert (plotting.MISSING in (tmp_path / "demo.md").read_text()) != plotting.available()
    assert "| static |" in (tmp_path / "demo.md").read_text()
    assert "dev confirmation part (held out) | 200 |" in (tmp_path / "demo.md").read_text()  # beside test
    assert report["test_gains"]["static"]["n"] == 16
    # the demo's run folders are `fheads eval`'s: `fheads report` reads them and finds the same numbers
    again = build_report(tmp_path / "runs")["shapes"]
    for name, r in shapes_report["methods"].items():
        assert again["methods"][name]["accuracy"] == r["accuracy"]
    # the reasoning-tuned model beside it, on the same items, with the premise measured on both
    tuned = report["reasoning_tuned"]
    assert tuned["reported_on"] == "test (16 items)" and list(tuned["shapes"]["methods"]) == list(METHODS)
    assert list(tuned["premise"]) == ["shapes-r1-tiny", "shapes-r1-tiny-reasoning"]
    assert tuned["premise"]["shapes-r1-tiny"]["accuracy"] == shapes_report["methods"]["vanilla"]["accuracy"]
    assert tuned["premise_difference"]["accuracy"]["n"] == 16 and len(tuned["premise_difference"]["deep_half"]) == 5
    assert "## The reasoning-tuned model (shapes-r1-tiny-reasoning)" in (tmp_path / "demo.md").read_text()
    assert (tmp_path / "premise_attention.png").is_file() == plotting.available()
    assert build_report(tmp_path / "shapes-r1-tiny-reasoning" / "runs")["shapes"]["items"] == 16
    rerun = CliRunner().invoke(app, ["demo", "--limit", "16", "--out", str(tmp_path)])  # resumes: nothing to do
    assert rerun.exit_code == 0 and json.loads((tmp_path / "demo.json").read_text())["shapes"] == shapes_report


def test_demo_rejects_an_unknown_method_before_loading(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--method", "nope", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "Unknown method(s) nope" in result.output
    assert not (tmp_path / "d").exists()


def test_data_shapes_folder_is_read_by_eval(tmp_path):
    result = CliRunner().invoke(app, ["data", "shapes", "--out", str(tmp_path), "--split", "test", "--n", "7"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [it.id for it in shapes.items("test", n=7)]
    examples = list(get_benchmark("shapes").examples(tmp_path, "test"))  # the folder as written, not the .jsonl
    assert [e.id for e in examples] == [r["id"] for r in rows]


@pytest.mark.slow
def test_demo_claims_only_what_it_wrote_and_gives_the_eval_command_that_extends_its_runs(tmp_path, monkeypatch):
    """Without matplotlib the last line lists no figure; the command in demo.md, run as written with a
    larger --limit, extends the demo's run folders instead of starting new ones, and `fheads report` reads them."""
    out = tmp_path / "demo out"  # a space: the command quotes its paths
    monkeypatch.setattr(plotting, "available", lambda: False)
    result = CliRunner().invoke(app, ["demo", "--limit", "8", "--out", str(out), "--method", "vanilla", "--method",
                                      "static", "--no-reasoning"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"wrote in {out}: demo.md, demo.json") and "png" not in last and "figure" not in last
    assert all((out / name).exists() for name in last.split(": ", 1)[1].split(", "))
    assert "heads.json" in last and "runs" in last and not list(out.glob("*.png"))
    folders = sorted(p.name for p in (out / "runs").iterdir())
    text = (out / "demo.md").read_text()
    assert plotting.MISSING in text and "not speed measurements" in text
    command = text.split("To continue these runs with `fheads eval`")[1].split("```\n")[1]
    assert command.startswith("for m in vanilla static; do fheads eval ")
    script = 'fheads() { "$PYTHON" -m functional_heads.apps.cli "$@"; }\n' + \
        command.replace('--method "$m"', '--limit 12 --method "$m"')
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(p.name for p in (out / "runs").iterdir()) == folders  # the same runs, now longer
    assert "## shapes (12 items)" in ran.stdout
    assert all(len(Run.open(out / "runs", json.loads((out / "runs" / f / "run.json").read_text())["settings"]).records)
               == 12 for f in folders)
