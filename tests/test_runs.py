"""Run folders: one record per item, resumable after a kill, one folder per setting."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from functional_heads.bundled import bundled_model_path
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.methods import Method
from functional_heads.evaluation.runs import RESULTS, Run, evaluate, read_records
from functional_heads.loading import load_model, load_processor


def test_folder_per_setting(tmp_path):
    a = Run.open(tmp_path, "pope", "vanilla", {"model": "m", "generation": {"max_new_tokens": 8}})
    same = Run.open(tmp_path, "pope", "vanilla", {"model": "m", "generation": {"max_new_tokens": 8}})
    other = Run.open(tmp_path, "pope", "vanilla", {"model": "m", "generation": {"max_new_tokens": 9}})
    assert a.folder == same.folder != other.folder
    assert a.folder.name.startswith("pope-vanilla-")


def test_torn_last_line_is_dropped_and_others_kept(tmp_path):
    path = tmp_path / RESULTS
    path.write_text('{"id": "a", "score": 1}\n{"id": "b", "score": 0}\n{"id": "c", "sc')
    assert set(read_records(path, repair=True)) == {"a", "b"}
    assert path.read_text() == '{"id": "a", "score": 1}\n{"id": "b", "score": 0}\n'
    path.write_text('{"id": "a", "score": 1}\nnot json\n{"id": "b", "score": 0}\n')
    with pytest.raises(ValueError, match="damaged"):
        read_records(path)


class Interrupted(Method):
    """Vanilla that dies (as on Ctrl-C) at its `die_at`-th batch."""

    def __init__(self, die_at):
        super().__init__("vanilla")
        self.calls, self.die_at = 0, die_at

    def generate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return super().generate(*args, **kwargs)


def test_resume_does_nothing_twice(tmp_path):
    path = bundled_model_path()
    model, processor = load_model(path), load_processor(path)
    bench = get_benchmark("shapes")
    run = Run.open(tmp_path, "shapes", "vanilla", {"split": "dev"})
    dying = Interrupted(die_at=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, processor, bench, bench.examples(None, "dev"), dying, run, batch_size=4, limit=16,
                 progress=False, max_new_tokens=64)
    assert len(read_records(run.folder / RESULTS)) == 8  # two batches finished before the kill
    with open(run.folder / RESULTS, "a") as f:
        f.write('{"id": "dev-0000')  # and a torn write on top
    again = Run.open(tmp_path, "shapes", "vanilla", {"split": "dev"})
    counting = Interrupted(die_at=-1)
    evaluate(model, processor, bench, bench.examples(None, "dev"), counting, again, batch_size=4, limit=16,
             progress=False, max_new_tokens=64)
    assert counting.calls == 2  # only the 8 missing items were answered
    lines = (run.folder / RESULTS).read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == 16 and len(set(ids)) == 16
    assert all(json.loads(line)["prediction"].startswith("<think>") for line in lines)


def test_killed_cli_run_continues_where_it_stopped(tmp_path):
    command = [sys.executable, "-m", "functional_heads.cli", "eval", "--model", str(bundled_model_path()),
               "--bench", "shapes", "--method", "vanilla", "--out", str(tmp_path), "--limit", "48",
               "--batch-size", "4", "--max-new-tokens", "64"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    results = None
    while time.time() < deadline:
        found = list(tmp_path.glob(f"*/{RESULTS}"))
        if found and len(found[0].read_text().splitlines()) >= 8:
            results = found[0]
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert results is not None, "the run wrote nothing in two minutes"
    before = len(read_records(results))
    assert 8 <= before < 48
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert len(ids) == 48 and len(set(ids)) == 48
