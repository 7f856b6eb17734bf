"""Run folders: one record per item, resumable after a kill, one folder per setting, the model identified by
what it is."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from functional_heads.evaluation.answering import answer_into_run
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.engine import Decoding, HFBackend
from functional_heads.evaluation.methods import get_method
from functional_heads.evaluation.methods.builtin import Vanilla
from functional_heads.evaluation.runs import RESULTS, SPEC, Run, open_run, read_records, run_identity
from functional_heads.testbed.bundled import bundled_model_path
from functional_heads.utils.errors import UserError


def settings(**extra):
    return {"benchmark": "shapes", "method": "vanilla", "model": "m", **extra}


def test_folder_per_setting_made_with_its_first_record(tmp_path):
    a = Run.open(tmp_path, settings(generation={"max_new_tokens": 8}))
    same = Run.open(tmp_path, settings(generation={"max_new_tokens": 8}))
    other = Run.open(tmp_path, settings(generation={"max_new_tokens": 9}))
    assert a.folder == same.folder != other.folder
    assert a.folder.name.startswith("shapes-vanilla-")
    assert not a.folder.exists()  # nothing is written before there is something to keep
    a.append([{"id": "x", "score": 1.0}])
    assert (a.folder / SPEC).is_file() and set(Run.open(tmp_path, settings(generation={"max_new_tokens": 8})).records) == {"x"}


def test_torn_last_line_is_dropped_and_others_kept(tmp_path):
    path = tmp_path / RESULTS
    path.write_text('{"id": "a", "score": 1}\n{"id": "b", "score": 0}\n{"id": "c", "sc')
    assert set(read_records(path, repair=True)) == {"a", "b"}
    assert path.read_text() == '{"id": "a", "score": 1}\n{"id": "b", "score": 0}\n'
    path.write_text('{"id": "a", "score": 1}\nnot json\n{"id": "b", "score": 0}\n')
    with pytest.raises(ValueError, match="damaged"):
        read_records(path)


class Interrupted(Vanilla):
    """Vanilla that dies (as on Ctrl-C) at its `die_at`-th batch."""

    def __init__(self, die_at):
        super().__init__()
        self.calls, self.die_at = 0, die_at

    def generate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return super().generate(*args, **kwargs)


@pytest.mark.slow
def test_resume_does_nothing_twice(tmp_path):
    path = bundled_model_path()
    backend = HFBackend.load(path)
    bench = get_benchmark("shapes")
    run = Run.open(tmp_path, settings(split="dev"))
    decoding = Decoding(max_new_tokens=64)
    with pytest.raises(KeyboardInterrupt):
        answer_into_run(run, backend, bench, bench.examples(None, "dev"), Interrupted(die_at=1), decoding,
                        batch_size=4, limit=16, progress=False)
    assert not run.folder.exists()  # killed before its first record: nothing left behind
    with pytest.raises(KeyboardInterrupt):
        answer_into_run(run, backend, bench, bench.examples(None, "dev"), Interrupted(die_at=3), decoding,
                        batch_size=4, limit=16, progress=False)
    assert len(read_records(run.folder / RESULTS)) == 8  # two batches finished before the kill
    with open(run.folder / RESULTS, "a") as f:
        f.write('{"id": "dev-0000')  # and a torn write on top
    again = Run.open(tmp_path, settings(split="dev"))
    counting = Interrupted(die_at=-1)
    answer_into_run(again, backend, bench, bench.examples(None, "dev"), counting, decoding, batch_size=4, limit=16,
                    progress=False)
    assert counting.calls == 2  # only the 8 missing items were answered
    lines = (run.folder / RESULTS).read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == 16 and len(set(ids)) == 16
    assert all(json.loads(line)["prediction"].startswith("<think>") for line in lines)


@pytest.mark.slow
def test_killed_cli_run_continues_where_it_stopped(tmp_path):
    command = [sys.executable, "-m", "functional_heads.apps.cli", "eval", "--model", str(bundled_model_path()),
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


@pytest.mark.slow
def test_interrupted_cli_run_says_how_to_resume_and_logs_progress_out_of_the_whole(tmp_path):
    command = [sys.executable, "-m", "functional_heads.apps.cli", "eval", "--model", str(bundled_model_path()),
               "--bench", "shapes", "--method", "vanilla", "--out", str(tmp_path), "--limit", "400",
               "--batch-size", "4", "--max-new-tokens", "64"]
    subprocess.run(command[:-6] + ["--limit", "8", "--batch-size", "4", "--max-new-tokens", "64"], check=True,
                   capture_output=True)
    # a shell's background jobs inherit SIGINT ignored (as under `nohup ... &`); the child gets it back
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = None
    deadline = time.time() + 120
    while time.time() < deadline and log is None:  # wait until the resumed run has logged progress
        found = list(tmp_path.glob("*/log.txt"))  # (400 items leave seconds of work to interrupt)
        if found and "/400 items (" in found[0].read_text():
            log = found[0]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert log is not None, "no progress line in the run's log"
    assert process.returncode == 130 and "rerun the same command to resume" in stderr
    assert "8/400 items done, starting" in stderr  # out of the whole job, not of what is left
    assert "Traceback" not in stderr


class Stub(Vanilla):
    """Answers at once, and notes how many items the data had yielded when the first batch came."""

    def __init__(self, counter):
        super().__init__()
        self.counter, self.seen_at_first = counter, None

    def generate(self, model, processor, images, prompts, **kwargs):
        import torch

        from functional_heads.evaluation.methods import Generation

        self.seen_at_first = self.seen_at_first or self.counter[0]
        return Generation(torch.zeros(len(prompts), 2, dtype=torch.long), 1, [0.0] * len(prompts))


def test_answering_into_a_run_streams_the_items_instead_of_holding_them(tmp_path):
    bench = get_benchmark("shapes")
    counter, calls = [0], [0]

    def source():
        calls[0] += 1
        for example in bench.examples(None, "dev"):
            counter[0] += 1
            yield example

    class Decoder:
        def batch_decode(self, tokens, **_):
            return ["<answer>0</answer>"] * len(tokens)

        def apply_chat_template(self, messages, **_):  # the per-image check before each batch
            return ""

        def __call__(self, **_):
            return {}

    method = Stub(counter)
    run = answer_into_run(Run.open(tmp_path, settings()), HFBackend(None, Decoder()), bench, source, method,
                          batch_size=2, limit=300, progress=False, order="length")
    assert calls[0] == 2 and len(run.records) == 300  # one pass to count, one to answer
    assert method.seen_at_first - 300 <= 2 * 16  # the answering pass had read one window ahead, not all 300
    with pytest.raises(ValueError, match="order must be one of length, file"):
        answer_into_run(Run.open(tmp_path, settings(split="x")), HFBackend(None, Decoder()), bench, source, method,
                        order="random")
    assert calls[0] == 2  # refused before reading the data


def _model_copy(folder):
    """A copy of the bundled model's files (those that make the model, not its tuning notes)."""
    shutil.copytree(bundled_model_path(), folder, ignore=shutil.ignore_patterns("*.md", "*.png", "*.jsonl", "*.txt"))
    return folder


def test_a_moved_model_keeps_its_runs_and_new_weights_at_its_path_get_their_own(tmp_path):
    bench, method = get_benchmark("shapes"), get_method("vanilla")
    first = _model_copy(tmp_path / "models" / "a")
    run = open_run(tmp_path / "runs", first, bench, method)
    run.append([{"id": "x", "score": 1.0}])
    about = json.loads((run.folder / SPEC).read_text())
    assert about["about"] == {"model_path": str(first.resolve())}  # noted, outside the identity
    assert about["settings"]["model"]["model_type"] == "qwen2_5_vl"
    assert str(first.resolve()) not in json.dumps(about["settings"])
    moved = first.rename(tmp_path / "elsewhere")
    again = open_run(tmp_path / "runs", moved, bench, method)
    assert again.folder == run.folder and set(again.records) == {"x"}  # its finished items, found again
    retrained = _model_copy(tmp_path / "models" / "a")  # the same path, other weights
    weights = retrained / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert open_run(tmp_path / "runs", retrained, bench, method).folder != run.folder
    assert run_identity(moved, bench, method)["backend"] == HFBackend.name


def test_a_run_folder_of_other_settings_under_this_name_is_a_user_error(tmp_path):
    from functional_heads.utils.errors import UserError

    run = Run.open(tmp_path, settings())
    run.append([{"id": "x", "score": 1.0}])
    spec = json.loads((run.folder / SPEC).read_text())
    (run.folder / SPEC).write_text(json.dumps({**spec, "settings": settings(split="other")}))
    with pytest.raises(UserError, match="holds other settings than this run's; move that folder away"):
        Run.open(tmp_path, settings())


def test_a_refused_second_launch_leaves_the_live_run_alone(tmp_path):
    """The first launch holds the lock in its first batch (folder made, nothing written yet); a second launch
    of the same run is refused and must not remove the folder the first one writes to."""
    benchmark = get_benchmark("shapes")
    examples = list(benchmark.examples(None, "dev"))[:2]
    first = Run.open(tmp_path, settings())
    with first.writing():
        second = Run.open(tmp_path, settings())
        with pytest.raises(UserError, match="Another process is writing"):
            answer_into_run(second, None, benchmark, examples, Vanilla(), progress=False)  # refused: no answering
        assert (first.folder / SPEC).is_file() and first.results_file.is_file()
        first.append([{"id": "x", "score": 1.0}])
    assert set(Run.open(tmp_path, settings()).records) == {"x"}


def test_a_run_that_fails_before_its_first_record_leaves_nothing_but_never_removes_an_older_folder(tmp_path):
    fresh = Run.open(tmp_path, settings(method="fresh"))
    with pytest.raises(RuntimeError):
        with fresh.writing():
            raise RuntimeError("the model failed to load")
    assert not fresh.folder.exists()
    nested = Run.open(tmp_path / "new" / "out", settings(method="fresh"))  # a new --out, and a folder above it
    with pytest.raises(RuntimeError):
        with nested.writing():
            raise RuntimeError("the model failed to load")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # an --out that was there stays, even empty
    with pytest.raises(RuntimeError):
        with Run.open(tmp_path / "kept", settings(method="fresh")).writing():
            raise RuntimeError("failed")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())
    older = Run.open(tmp_path, settings(method="older"))
    older.start()  # a folder that was there before this launch (e.g. made by a launch still starting)
    with pytest.raises(RuntimeError):
        with Run.open(tmp_path, settings(method="older")).writing():
            raise RuntimeError("failed")
    assert (older.folder / SPEC).is_file()


@pytest.mark.parametrize("line, message", [
    (b'{"score": 1}', "is not a record with an id"),
    (b'["a", 1]', "is not a record with an id"),
    (b'{"id": "b", "prediction": "caf\xe9"}', "is not valid JSON"),  # not UTF-8
])
def test_a_damaged_results_line_is_one_error_naming_the_file_and_line(tmp_path, line, message):
    path = tmp_path / RESULTS
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "score": 1}\n' + line + b'\n{"id": "c", "score": 0}\n')
    with pytest.raises(UserError, match=f"{RESULTS}:2 {message}.*remove that line") as caught:
        read_records(path)
    assert "\n" not in str(caught.value)
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "score": 1}\n')  # a byte-order mark is no damage
    assert set(read_records(path)) == {"a"}


@pytest.mark.parametrize("spec", ['{"settings": {"benchmark": "sha', '[1, 2]'])
def test_a_damaged_run_json_is_one_error_naming_it(tmp_path, spec):
    run = Run.open(tmp_path, settings())
    run.append([{"id": "x", "score": 1.0}])
    (run.folder / SPEC).write_text(spec)
    with pytest.raises(UserError, match=r"run\.json(:1: not valid JSON|: holds no 'settings').*restore its run.json"):
        Run.open(tmp_path, settings())
