"""scripts/lab_v2.py (the second lab protocol's experiments) on the two bundled models, a few read dev items."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import functional_heads as fh
from functional_heads.testbed.bundled import REASONING_TUNED

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--split", "dev", "--items", "16", "--sv-items", "8", "--choose", "dev", "--search-items", "16",
         "--probe-train", "60", "--probe-test", "20"]


def run(experiment, out):
    base, tuned = fh.bundled_model_path(), fh.bundled_model_path(REASONING_TUNED)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "lab_v2.py"), experiment, "--base", str(base),
                    "--tuned", str(tuned), "--out", str(out), *SMALL], check=True, capture_output=True)
    return json.loads((out / experiment / f"{experiment}.json").read_text()), tuned.name


@pytest.mark.slow
def test_the_three_experiments_run_and_share_their_answers(tmp_path):
    e1, seed = run("e1", tmp_path)
    rates = e1["per_seed"][seed]["rates"]
    assert e1["items"] == 16 and e1["sv_items"] == 8 and rates["perceptual"]["n"] == 16
    assert 0 <= rates["perceptual"]["mcnemar"]["p_holm_family"] <= 1
    assert len(e1["per_seed"][seed]["sv"]["reference"]["deep_half"]) == 5  # i* and four points of the chain
    cached = sorted(p.name for p in (tmp_path / "cache" / "records").iterdir())
    assert cached == ["base-dev-16.jsonl", f"{seed}-dev-16.jsonl"]

    e2, _ = run("e2", tmp_path)
    swap = e2["per_seed"][seed]
    assert swap["perceptual"]["base"] == e1["base_rates"]["perceptual"]  # the base's answers were reused
    assert set(swap["perceptual"]) == {"base", "tuned", "tuned_lm+base_vision", "base_lm+tuned_vision"}
    assert e2["probe"]["base"]["test_rows"] == 20 * 9 and 0 <= e2["probe"]["base"]["accuracy"] <= 1

    e3, _ = run("e3", tmp_path)
    restored = e3["per_seed"][seed]
    assert len(restored["heads"]) == 6  # 10% of 8 x 8 heads
    assert all(abs(r - t) < 0.02 for r, t in zip(restored["sv_reached"], restored["sv_base"]))  # S_v restored
    assert restored["test"]["n"] == 16 and "Verdict" in (tmp_path / "e3" / "e3.md").read_text()


@pytest.mark.slow
def test_the_method_experiment_tunes_runs_verifies_and_tests_the_seeds_together(tmp_path):
    """scripts/lab_v2_method.sh for one seed (a 3-trial study on calib, the methods on 16 dev items), then e5."""
    tuned = fh.bundled_model_path(REASONING_TUNED)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "FHEADS": str(bin_dir / "fheads"), "PYTHON": sys.executable, "TRIALS": "3", "DEV": "calib",
           "TEST": "dev", "LIMIT": "16", "VERIFY_LIMIT": "16", "DRAWS": "1"}
    seed_out = tmp_path / "methods" / tuned.name
    subprocess.run(["bash", str(ROOT / "scripts" / "lab_v2_method.sh"), str(tuned), str(seed_out)], env=env,
                   check=True, capture_output=True)
    assert (seed_out / "verify").is_dir() and (seed_out / "tune" / "tune.json").is_file()

    e5, seed = run("e5", tmp_path)
    result = e5["per_seed"][seed]
    assert result["items"] == 16
    assert set(result["methods"]) == {"static", "dynamic", "perception-only", "reasoning-only", "vcd", "pai"}
    tests = [m["accuracy"]["mcnemar"] for m in result["methods"].values()]
    assert all(t["p"] <= t["p_holm"] <= 1 for t in tests)  # Holm over the 6 (one seed)
    assert result["goal_test"]["mcnemar"]["p_holm"] == result["goal_test"]["mcnemar"]["p"]  # a family of one
    base_records = [json.loads(line) for line in (tmp_path / "cache" / "records" / "base-dev-16.jsonl").open()]
    assert result["perceptual"]["base"] == sum(r["failure"] == "perceptual" for r in base_records) / 16
    assert "Goal met" in (tmp_path / "e5" / "e5.md").read_text()
