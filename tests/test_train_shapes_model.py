"""training/train_shapes_model.py: a run stopped by its time cap resumes to the very weights of an
uninterrupted run; a second start over a checkpoint is refused."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "32", "--layers", "2", "--heads", "2", "--vision-width", "32", "--vision-depth", "1",
        "--steps", "3", "--batch-size", "4", "--eval-every", "1000", "--dev-items", "8", "--checkpoint-every", "1000"]


def train(out, *extra):
    return subprocess.run([sys.executable, str(ROOT / "training" / "train_shapes_model.py"), "--out", str(out),
                           *TINY, *extra], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = train(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    stopped = train(tmp_path / "parts", "--minutes", "1e-9")  # the cap stops it after its first step
    assert stopped.returncode == 0 and "rerun with --resume" in stopped.stdout, stopped.stderr
    refused = train(tmp_path / "parts")
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    for cap in (["--minutes", "1e-9"], []):  # one more capped step, then to the end
        resumed = train(tmp_path / "parts", "--resume", *cap)
        assert resumed.returncode == 0 and "resuming at step" in resumed.stdout, resumed.stderr
    parts, one = tmp_path / "parts", tmp_path / "whole"
    assert (parts / "model.safetensors").read_bytes() == (one / "model.safetensors").read_bytes()
    assert not (parts / "checkpoint.pt").exists()
    steps = [line.split('"step": ')[1].split(",")[0] for line in (parts / "training_log.jsonl").read_text().splitlines()]
    assert steps == ["1", "2", "3", "3"]  # every step once, then the final check
