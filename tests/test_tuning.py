"""`fheads tune`: search space, split and sizes, storage and study checks, a whole study on the bundled model,
several workers on one storage, and a killed worker's study resumed."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from functional_heads.apps.cli import app
from functional_heads.core.config import RescaleConfig
from functional_heads.core.heads import HeadMap, identify_heads
from functional_heads.evaluation.benchmarks import shapes_generator
from functional_heads.testbed.bundled import bundled_model_path
from functional_heads.tuning.settings import TuneSettings
from functional_heads.tuning.space import Infeasible, SearchSpace
from functional_heads.tuning.storage import open_storage, open_study
from functional_heads.tuning.study import check_sizes, divide, reads_test_split, refuse_test_split, tune
from functional_heads.utils.errors import UserError

optuna = pytest.importorskip("optuna", reason="fheads tune needs the tune extra (optuna)")
from optuna.trial import FixedTrial, TrialState  # noqa: E402

runner = CliRunner()
FAST = TuneSettings(trials=6, min_effect=0.3, min_items=8)  # 48 dev items: 24 search, 24 confirmation


@pytest.fixture(scope="module")
def dev_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    shapes_generator.write_split("dev", folder, 48)
    shapes_generator.write_split("calib", folder, 16)
    return folder


def ratios(layers=8, heads=8, seed=0):
    return torch.rand(layers, heads, generator=torch.Generator().manual_seed(seed))


def test_space_draws_thresholds_by_share_and_switches_a_class_off_at_share_zero():
    space, s_v = SearchSpace(num_layers=8), ratios()
    trial = FixedTrial({"perc_last_layer": 3, "reas_first_layer": 5, "perc_share": 0.05, "reas_share": 0.0,
                        "g_perc": 1.3, "g_reas": 1.5})
    config = space.suggest(trial, s_v)
    heads = identify_heads(s_v, config)
    assert int(heads.perception.sum()) == round(0.05 * 64) and not heads.reasoning.any()
    assert heads.perception[4:].sum() == 0  # only inside the band
    assert config.g_reas == 1.0 and config.g_perc == 1.3
    picked = s_v[:4][heads.perception[:4]]
    assert picked.min() >= s_v[:4][~heads.perception[:4]].max()  # the band's highest S_v


def test_space_rejects_crossing_thresholds_only_where_bands_overlap():
    space, s_v = SearchSpace(num_layers=8, max_share=0.25), torch.linspace(0, 1, 64).view(8, 8)  # S_v rises with depth
    shallow_perc = {"perc_last_layer": 1, "reas_first_layer": 6, "perc_share": 0.05, "reas_share": 0.05,
                    "g_perc": 1.2, "g_reas": 1.2}
    config = space.suggest(FixedTrial(shallow_perc), s_v)  # apart: low S_v perception heads are allowed
    assert config.tau_reas > config.tau_perc
    with pytest.raises(Infeasible):
        space.suggest(FixedTrial({**shallow_perc, "reas_first_layer": 1, "perc_share": 0.2}), s_v)


def test_per_layer_gains_and_query_tokens_reach_the_config():
    space = SearchSpace(num_layers=4, per_layer_gains=True, query_tokens=3)
    params = {"perc_last_layer": 1, "reas_first_layer": 2, "perc_share": 0.1, "reas_share": 0.1,
              **{f"g_layer_{layer}": 1.0 + 0.1 * layer for layer in range(4)}}
    config = space.suggest(FixedTrial(params), ratios(4, 8))
    assert config.layer_gains == pytest.approx((1.0, 1.1, 1.2, 1.3)) and config.query_tokens == 3
    heads = identify_heads(ratios(4, 8), config)
    assert heads.gains[2][heads.reasoning[2]].tolist() == pytest.approx([1.2] * int(heads.reasoning[2].sum()))


def test_rungs_double_up_to_the_search_part():
    assert TuneSettings(min_items=25).rungs(200) == [25, 50, 100, 200]
    assert TuneSettings(min_items=25, reduction_factor=3).rungs(100) == [25, 75, 100]
    assert TuneSettings(min_items=50).rungs(30) == [30]


def test_divide_is_seeded_disjoint_and_whole():
    items = list(shapes_generator.items("dev", 40))
    search, confirm = divide(items, 0.25, seed=0)
    assert len(confirm) == 10 and len(search) == 30
    assert {i.id for i in search} | {i.id for i in confirm} == {i.id for i in items}
    assert [i.id for i in divide(items, 0.25, seed=0)[1]] == [i.id for i in confirm]
    assert [i.id for i in divide(items, 0.25, seed=1)[1]] != [i.id for i in confirm]


def test_a_confirmation_part_too_small_names_the_items_needed():
    with pytest.raises(ValueError, match=r"holds 100 items: confirming a gain of 5% .* needs at least 150"):
        check_sizes(300, 100, TuneSettings(min_effect=0.05))
    check_sizes(300, 150, TuneSettings(min_effect=0.05))
    with pytest.raises(ValueError, match="fewer than the first rung"):
        check_sizes(10, 150, TuneSettings(min_effect=0.05, min_items=25))


@pytest.mark.parametrize("url, message", [
    ("nowhere", "neither a database URL"),
    ("sqlite:////no/such/folder/study.db", "Cannot open the storage sqlite:////no/such/folder/study.db"),
    ("postgresql://user@127.0.0.1:9/db", "Cannot open the storage postgresql://"),
])
def test_an_unreachable_storage_is_one_clear_error(url, message):
    with pytest.raises(ValueError, match=message):
        open_storage(url, heartbeat=60)


def test_a_study_made_with_other_settings_is_refused(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=60)
    identity = {"model": "/models/a", "space": {"num_layers": 8}}
    open_study(storage, "s", identity, FAST, 24)
    study = open_study(storage, "s", identity, FAST, 24)  # the same settings join it
    study.set_user_attr("ratios", [[0.5]])  # it holds S_v now
    with pytest.raises(ValueError, match=r"other settings: model \(study: /models/a; now: /models/b\)"):
        open_study(storage, "s", {**identity, "model": "/models/b"}, FAST, 24)


def test_a_study_left_empty_by_a_failed_command_takes_the_next_commands_settings(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=60)
    open_study(storage, "s", {"model": "/models/a"}, FAST, 24)  # then, say, the weights failed to load
    study = open_study(storage, "s", {"model": "/models/b"}, FAST, 24)
    assert study.user_attrs["identity"] == {"model": "/models/b"}


@pytest.mark.slow
def test_study_on_the_bundled_model_writes_a_result_every_reader_takes(dev_folder, tmp_path):
    summary = tune(bundled_model_path(), "shapes", out=tmp_path, data=dev_folder, split="dev", calib_split="calib",
                   settings=FAST, batch_size=24, progress=False)
    assert summary["finished"] == 6 and summary["search_items"] == 24 and summary["confirm_items"] == 24
    assert summary["calibration"] == {"split": "calib", "items": 16}  # the items used: the split holds 16
    files = {p.name for p in tmp_path.iterdir()}
    assert {"tune.json", "tune.md", "settings.json", "heads.json", "log.txt", "study.db"} <= files
    assert {"tune_bands.png", "tune_shares.png", "tune_gains.png"} <= files
    result = RescaleConfig.from_dict(summary["result"])
    assert RescaleConfig.resolve(settings=tmp_path / "settings.json") == result  # what `calibrate --settings` reads
    assert HeadMap.load(tmp_path / "heads.json").config == result  # what `eval --heads` reads
    if not summary["confirmed"]:  # nothing confirmed: the result is vanilla
        assert (result.g_perc, result.g_reas) == (1.0, 1.0) and "not confirmed" in summary["verdict"] \
            or "no setting beat vanilla" in summary["verdict"]
    assert summary["verdict"] in (tmp_path / "tune.md").read_text()
    # a rerun of the same command finds the study finished and evaluates nothing again
    again = tune(bundled_model_path(), "shapes", out=tmp_path, data=dev_folder, split="dev", calib_split="calib",
                 settings=FAST, batch_size=24, progress=False)
    assert again["items_evaluated_this_worker"] == 0 and again["result"] == summary["result"]
    assert torch.is_grad_enabled()


def _tune_command(out, dev_folder, storage, trials, extra=()):
    return [sys.executable, "-m", "functional_heads.apps.cli", "tune", "--model", str(bundled_model_path()), "--bench",
            "shapes", "--data", str(dev_folder), "--calib-split", "calib", "--out", str(out), "--storage", storage,
            "--trials", str(trials), "--min-effect", "0.3", "--min-items", "8", "--batch-size", "24",
            "--max-new-tokens", "64", *extra]


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # workers sharing 2 cores: one thread each, or they crawl


def _trials(storage_url):
    return optuna.load_study(study_name="fheads-tune", storage=storage_url).get_trials()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study_without_losing_or_repeating_a_trial(dev_folder, tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'study.log'}"
    workers = [subprocess.Popen(_tune_command(tmp_path / f"out{i}", dev_folder, storage, 10), env=ONE_THREAD,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    opened = storage if kind == "sqlite" else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    trials = [t for t in _trials(opened) if not t.user_attrs.get("surplus")]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 10 and not [t for t in trials if t.state == TrialState.RUNNING]
    pids = {t.user_attrs["worker"]["pid"] for t in finished}
    assert len(pids) == 2  # both worked on it
    logged = [line.split()[2] for i in range(2) for line in (tmp_path / f"out{i}" / "log.txt").read_text().splitlines()
              if line.split()[1:2] == ["trial"] and "queued" not in line]
    assert sorted(map(int, logged)) == sorted(t.number for t in finished)  # each trial run by exactly one worker


@pytest.mark.slow
def test_a_killed_workers_study_resumes_and_reruns_its_trial(dev_folder, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = subprocess.Popen(_tune_command(tmp_path / "out", dev_folder, storage, 8), env=ONE_THREAD,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, running = time.time() + 300, None
    while time.time() < deadline and running is None:
        time.sleep(0.2)
        try:
            trials = _trials(storage)
        except Exception:  # the study is not made yet
            continue
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = next((t for t in trials if t.state == TrialState.RUNNING and done >= 2), None)
    assert running is not None, "the worker never reached its third trial"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    result = subprocess.run(_tune_command(tmp_path / "out", dev_folder, storage, 8), env=ONE_THREAD,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = _trials(storage)
    killed = next(t for t in trials if t.number == running.number)
    assert killed.state == TrialState.FAIL
    retried = [t for t in trials if t.user_attrs.get("retry_of") == running.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 8
    assert "tune.json" in {p.name for p in (tmp_path / "out").iterdir()}


def test_test_splits_are_refused_whatever_their_name_unless_asked_for(dev_folder, tmp_path):
    from functional_heads.evaluation.benchmarks import get_benchmark

    mmstar, mathvista = get_benchmark("mmstar"), get_benchmark("mathvista")
    assert reads_test_split(mmstar, "val") and reads_test_split(mathvista, "testmini")  # their evaluation splits
    assert reads_test_split(mmstar, "test") and reads_test_split(mmstar, "Test-Dev")
    assert not reads_test_split(mmstar, "dev") and not reads_test_split(mathvista, "val")
    refuse_test_split(mmstar, {"--split": "val", "--calib-split": None}, allow_test_split=True)
    with pytest.raises(UserError, match="--split test is shapes's evaluation split"):  # the Python API alike
        tune(bundled_model_path(), "shapes", out=tmp_path, data=dev_folder, split="test", settings=FAST)
    assert not (tmp_path / "study.db").exists()


@pytest.mark.parametrize("args, message", [
    (["--min-effect", "0.05"], "confirmation part holds 24 items"),
    (["--storage", "nowhere"], "Cannot open the storage nowhere"),
    (["--pruner", "random"], "pruner must be one of halving, hyperband, none"),
    (["--calib-data", "missing.jsonl"], "missing.jsonl does not exist"),
    (["--calib-data", "BAD"], r"bad.jsonl:1: not valid JSON"),
    (["--calib-data", "THIN"], r"thin.jsonl: 2 of 2 calibration items have no image the model can take \(first: "
                               r"\S*thin.jsonl:1: image \S*thin.png: the model's processor refuses it"),
    (["--split", "nosuch"], "Unknown split|holds no items|nosuch"),
    (["--split", "test"], "--split test is shapes's evaluation split .*--allow-test-split"),
    (["--split", "testmini"], "--split testmini is a test split: settings tuned on it make its results look better"),
    (["--split", "all"], "--split all is every split of the data, the test split included"),
    (["--calib-split", "test"], "--calib-split test is shapes's evaluation split"),
])
def test_bad_tune_requests_fail_in_one_line_before_any_work(dev_folder, tmp_path, args, message):
    base = ["tune", "--model", str(bundled_model_path()), "--bench", "shapes", "--data", str(dev_folder),
            "--out", str(tmp_path / "out"), "--min-effect", "0.3", "--min-items", "8"]
    (tmp_path / "bad.jsonl").write_text("not json\n")
    from PIL import Image

    Image.new("RGB", (4000, 1)).save(tmp_path / "thin.png")  # beyond the processor's aspect-ratio limit
    (tmp_path / "thin.jsonl").write_text('{"image": "thin.png", "prompt": "hi"}\n' * 2)
    files = {"BAD": str(tmp_path / "bad.jsonl"), "THIN": str(tmp_path / "thin.jsonl")}
    result = runner.invoke(app, base + [files.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert re.search(message, result.output.replace("\n", " ")), result.output
    assert not (tmp_path / "out" / "study.db").exists()  # no study left to refuse the corrected command


def test_band_figure_draws_cells_no_trial_reached_unlike_a_gain_of_zero(tmp_path, saved_figure):
    import numpy as np

    from functional_heads.tuning import figures

    trials = [{"state": "complete", "value": value, "config": {"reas_first_layer": reas, "perc_last_layer": perc},
               "params": {}} for reas, perc, value in ((5, 2, 0.0), (6, 1, 0.03), (7, 0, -0.02))]
    fig, renderer, _ = saved_figure(lambda: figures.tune_bands(trials, 8, tmp_path / "tune_bands.png"))
    ax = fig.axes[0]
    pixels = np.asarray(renderer.buffer_rgba())[..., :3].astype(float)

    def colour(reas: int, perc: int) -> np.ndarray:  # the mean colour of the cell's middle
        (x0, y0), (x1, y1) = ax.transData.transform([(perc - 0.3, reas - 0.3), (perc + 0.3, reas + 0.3)])
        height = pixels.shape[0]
        return pixels[int(height - y1):int(height - y0), int(x0):int(x1)].reshape(-1, 3).mean(0)

    untried, zero = colour(0, 0), colour(5, 2)
    assert np.abs(untried - zero).max() > 40 and np.abs(untried - colour(3, 6)).max() < 5  # all untried alike
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["no trial"]


def _summary(importances: dict) -> dict:
    """A finished study's summary, as `summary.summarize` gives it, without a study."""
    result = RescaleConfig(perc_last_layer=2, reas_first_layer=5, tau_perc=0.9, tau_reas=0.1).to_dict()
    trial = {"number": 0, "state": "complete", "value": 0.01, "items": 24, "share_rescaled": 0.05, "params": {},
             "config": result, "same_as": None}
    return {"result": result, "calibration": {"split": "calib", "items": 16}, "confirmed": False,
            "verdict": "not confirmed", "candidate": None, "confirmation": None, "split": "dev", "search_items": 24,
            "confirm_items": 24, "study": "s", "trials": [trial], "space": {"num_layers": 8},
            "importances": importances, "counts": {"complete": 1, "pruned": 0, "fail": 0}, "finished": 1,
            "evaluated_maps": 1, "items_evaluated": 24, "benchmark": "shapes", "model": "m"}


@pytest.mark.parametrize("drawing, importances", [(False, {}), (True, {}), (True, {"g_perc": 0.7, "perc_share": 0.3})])
def test_tune_md_lists_only_the_figures_it_wrote(tmp_path, monkeypatch, drawing, importances):
    from functional_heads.tuning import report
    from functional_heads.utils import plotting

    if drawing and not plotting.available():
        pytest.skip("figures need the plot extra")
    monkeypatch.setattr(plotting, "available", lambda: drawing)
    written = report.write(_summary(importances), tmp_path, ratios(), "qwen2_5_vl")
    text = (tmp_path / "tune.md").read_text()
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    listed = sorted(set(re.findall(r"tune_\w+\.png", text)))
    assert listed == drawn == sorted(p.name for p in written if p.suffix == ".png")
    assert ("tune_importances.png" in drawn) == bool(importances) and (plotting.MISSING in text) != drawing
