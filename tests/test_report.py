"""`fheads report`: side by side on the same items, refusing runs that are not comparable."""

import json

import pytest
from typer.testing import CliRunner

from functional_heads.apps.cli import app
from functional_heads.evaluation.report import LATENCY_CAVEAT, build_report, report_markdown
from functional_heads.evaluation.runs import Run
from functional_heads.utils import plotting


def write_run(out, method, scores, seconds=1.0, prompt="p", bench="pope", extra=None, model="m"):
    run = Run.open(out, {"benchmark": bench, "method": method, "model": model})
    run.append([{"id": str(i), "gold": "yes", "prediction": "yes" if s else "no", "extracted": "yes" if s else "no",
                 "score": float(s), "seconds": seconds, "error": None, "category": "random",
                 "prompt_sha": prompt} for i, s in enumerate(scores)] + (extra or []))
    return run


def test_side_by_side_with_paired_test_and_latency(tmp_path):
    write_run(tmp_path, "vanilla", [1, 0, 0, 0, 1, 0], seconds=2.0)
    write_run(tmp_path, "static", [1, 1, 1, 1, 1, 0], seconds=2.2,
              extra=[{"id": "x", "error": "unusable image: missing", "score": None}])
    report = build_report(tmp_path)["pope"]
    assert report["items"] == 6 and list(report["methods"]) == ["vanilla", "static"]
    static = report["methods"]["static"]
    assert static["accuracy"] == pytest.approx(5 / 6)
    assert static["mcnemar_vs_vanilla"] == {"a_only": 0, "b_only": 3, "p": 0.25, "p_holm": 0.25}  # 2 * (1/2)^3
    assert static["latency_ratio"] == pytest.approx(1.1) and static["unusable_items"] == 1
    assert static["random"]["recall"] == pytest.approx(5 / 6)  # POPE's own metrics per split
    text = report_markdown({"pope": report})
    assert "| static | 83.3% [" in text and "+3 / -0, p=0.25" in text
    assert "Unusable items (recorded with their reason, left out above): static 1" in text
    assert LATENCY_CAVEAT in text  # beside any latency ratio: single wall-clock runs are no speed measurement
    write_run(tmp_path / "seed", "vanilla", [1, 0], bench="seedbench")
    seed = report_markdown(build_report(tmp_path / "seed"))
    assert "| method | random |" in seed and "| vanilla | 50.0% |" in seed  # the per-category table


def test_holm_corrects_every_method_vs_vanilla_test_of_the_report(tmp_path):
    """The family is all method-vs-vanilla tests, across benchmarks: with three, the smallest p is tripled."""
    write_run(tmp_path, "vanilla", [0] * 8)
    write_run(tmp_path, "static", [1] * 6 + [0] * 2)  # +6 / -0: p = 2 / 64
    write_run(tmp_path, "dynamic", [1, 0, 0, 0, 0, 0, 0, 0])  # p = 1
    write_run(tmp_path, "vanilla", [1, 0, 1, 0], bench="seedbench")
    write_run(tmp_path, "static", [1, 1, 1, 1], bench="seedbench")  # +2 / -0: p = 0.5
    report = build_report(tmp_path)
    pope, seed = report["pope"]["methods"], report["seedbench"]["methods"]
    assert pope["static"]["mcnemar_vs_vanilla"]["p"] == pytest.approx(1 / 32)
    assert pope["static"]["mcnemar_vs_vanilla"]["p_holm"] == pytest.approx(3 / 32)
    assert seed["static"]["mcnemar_vs_vanilla"]["p_holm"] == pytest.approx(1.0)  # max(2 * 0.5, 3 / 32)
    assert pope["dynamic"]["mcnemar_vs_vanilla"]["p_holm"] == 1.0
    text = report_markdown(report)
    assert "Holm p=0.0938" in text and "family of the 3 method-vs-vanilla tests" in text
    assert "exploratory" in text


def test_refuses_different_items_unless_asked(tmp_path):
    write_run(tmp_path, "vanilla", [1, 0, 1, 1])
    write_run(tmp_path, "vcd", [1, 1])
    with pytest.raises(ValueError, match="different items"):
        build_report(tmp_path)
    assert build_report(tmp_path, common_items=True)["pope"]["items"] == 2


def test_refuses_different_prompts(tmp_path):
    write_run(tmp_path, "vanilla", [1, 0], prompt="a")
    write_run(tmp_path, "pai", [1, 0], prompt="b")
    with pytest.raises(ValueError, match="other prompts"):
        build_report(tmp_path)


def test_refuses_runs_of_different_models(tmp_path):
    write_run(tmp_path, "vanilla", [1, 0], model={"model_type": "qwen2_5_vl", "content": "a"})
    write_run(tmp_path, "static", [1, 1], model={"model_type": "qwen2_5_vl", "content": "b"})
    with pytest.raises(ValueError, match="different models"):
        build_report(tmp_path)


def test_cli_report_writes_files(tmp_path):
    write_run(tmp_path / "runs", "vanilla", [1, 0, 1])
    write_run(tmp_path / "runs", "dynamic", [1, 1, 1])
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["pope"]["methods"]["dynamic"]["accuracy"] == 1.0
    if plotting.available():
        assert (tmp_path / "rep" / "report.png").stat().st_size > 1000
    else:
        assert plotting.MISSING in result.output and not (tmp_path / "rep" / "report.png").exists()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "No run folders" in missing.output


def test_refusing_two_runs_of_one_method_names_the_settings_that_differ(tmp_path):
    """As after `fheads demo` then `fheads eval` with eval's defaults: the message says what differs."""
    common = {"benchmark": "shapes", "model": {"model_type": "qwen2_5_vl", "content": "a"}, "split": "test"}
    folders = []
    for method, dtype, tokens, gains in (("vanilla", "float32", 64, None), ("static", "float32", 64, [1.2] * 64),
                                         ("static", "auto", 1024, [1.2] * 63 + [1.0])):
        settings = {**common, "method": method, "dtype": dtype, "generation": {"max_new_tokens": tokens},
                    **({"heads": gains} if gains else {})}
        run = Run.open(tmp_path, settings)
        run.append([{"id": "0", "score": 1.0, "seconds": 1.0, "error": None}])
        folders.append(run.folder.name)
    with pytest.raises(ValueError) as err:
        build_report(tmp_path)
    message = str(err.value)
    differences = dict(part.split(" is ", 1) for part in message.split(": ", 2)[2].split(". A report")[0].split("; "))
    assert sorted(differences) == ["dtype", "generation.max_new_tokens", "heads"]  # only what differs
    assert f'"float32" in {folders[1]}' in differences["dtype"] and f'"auto" in {folders[2]}' in differences["dtype"]
    assert f"64 in {folders[1]}" in differences["generation.max_new_tokens"]
    assert f"1024 in {folders[2]}" in differences["generation.max_new_tokens"]
    assert differences["heads"].startswith("[1.2, 1.2") and differences["heads"].count("(#") == 2  # start, digest


def test_refusing_runs_of_different_models_names_the_model_setting(tmp_path):
    write_run(tmp_path, "vanilla", [1, 0], model={"model_type": "qwen2_5_vl", "content": "a"})
    run = write_run(tmp_path, "static", [1, 1], model={"model_type": "qwen2_5_vl", "content": "b"})
    with pytest.raises(ValueError, match=f'model.content is "a" in .*, "b" in {run.folder.name}'):
        build_report(tmp_path)


def test_report_figure_keeps_every_legend_entry_and_zooms_to_the_intervals(tmp_path, saved_figure):
    from functional_heads.evaluation import figures

    names = ["vanilla", "static", "dynamic", "perception-only", "reasoning-only", "vcd"]
    methods = {name: {"accuracy": 0.80 + 0.01 * i, "ci95": [0.79 + 0.01 * i, 0.82 + 0.01 * i]}
               for i, name in enumerate(names)}
    fig, renderer, saved = saved_figure(lambda: figures.accuracy_bars({"shapes": {"methods": methods}},
                                                                      tmp_path / "report.png"))
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    # in the saved image, beside the axes (over no data point)
    assert saved.x0 <= legend.x0 and legend.x1 <= saved.x1 + 1 and saved.y0 <= legend.y0 <= legend.y1 <= saved.y1 + 1
    assert legend.x0 >= ax.get_window_extent(renderer).x1
    bottom, top = ax.get_ylim()
    assert 0.7 < bottom < 0.79 and 0.87 < top <= 0.95  # one point apart shows; the label says it is not from 0
    assert "not 0" in ax.get_ylabel()


def test_a_damaged_run_json_is_one_error_naming_it(tmp_path):
    run = write_run(tmp_path, "vanilla", [1, 0])
    (run.folder / "run.json").write_text('{"settings": ')
    with pytest.raises(ValueError, match=r"run\.json:1: not valid JSON .*the run folder is damaged"):
        build_report(tmp_path)
