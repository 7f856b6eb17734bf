import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from functional_heads.evaluation import distributed
from functional_heads.evaluation.distributed import Shard, device_map_for
from functional_heads.evaluation.runs import Run, run_records
from functional_heads.testbed.bundled import bundled_model_path

BIN = Path(sys.executable).parent


def test_shard_comes_from_the_launchers_variables():
    assert Shard.from_environment({}) == Shard(0, 1, 0)
    shard = Shard.from_environment({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (shard.rank, shard.world_size, shard.local_rank, shard.suffix, shard.label) == (3, 8, 1, ".rank3", "rank 3/8")
    assert [i for i in range(20) if shard.owns(i)] == [3, 11, 19]
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        Shard.from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        Shard.from_environment({"RANK": "x"})


def test_each_process_gets_its_gpu_or_its_set_of_gpus(monkeypatch):
    monkeypatch.setattr(distributed, "gpu_memory", lambda index: 80 << 30)
    assert device_map_for(Shard(1, 4, 1), None, gpu_count=4) == ({"": "cuda:1"}, None)
    assert device_map_for(Shard(0, 1, 0), None, gpu_count=4) == (None, None)  # one process: as given
    assert device_map_for(Shard(1, 2, 1), "auto", gpus_per_process=4, gpu_count=8) == \
        ("auto", {4: 80 << 30, 5: 80 << 30, 6: 80 << 30, 7: 80 << 30})
    assert device_map_for(Shard(1, 2, 1), None, gpu_count=0) == (None, None)  # CPU: every process on the CPU
    with pytest.raises(ValueError, match="needs GPUs 4..7, but 6 are visible"):
        device_map_for(Shard(1, 2, 1), None, gpus_per_process=4, gpu_count=6)


def test_a_run_reads_every_ranks_file_and_repairs_only_its_own(tmp_path):
    settings = {"benchmark": "b", "method": "m", "model": "x"}
    ranks = [Run.open(tmp_path, settings, Shard(r, 2)) for r in range(2)]
    ranks[0].append([{"id": "a"}])
    ranks[1].append([{"id": "b"}])
    other = ranks[1].results_file
    other.write_text(other.read_text() + '{"id": "c"')  # rank 1 mid-write (or killed there)
    rank0 = Run.open(tmp_path, settings, Shard(0, 2))
    assert set(rank0.records) == {"a", "b"} and other.read_text().endswith('{"id": "c"')  # left as it is
    rank1 = Run.open(tmp_path, settings, Shard(1, 3))
    assert set(rank1.records) == {"a", "b"} and other.read_text().endswith("}\n")  # its own: repaired
    assert set(run_records(rank0.folder)) == {"a", "b"}


@pytest.mark.slow  # two fresh interpreters
def test_two_processes_with_one_rank_are_refused(tmp_path):
    settings = {"benchmark": "b", "method": "m", "model": "x"}
    first = Run.open(tmp_path, settings, Shard(1, 2))
    script = ("import sys; from functional_heads.evaluation.run_folders import Run; "
              "from functional_heads.evaluation.distributed import Shard\n"
              f"run = Run.open({str(tmp_path)!r}, {settings!r}, Shard(1, 2))\n"
              "try:\n    run.writing().__enter__()\nexcept ValueError as err:\n    print(err); sys.exit(3)")
    with first.writing():
        refused = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert refused.returncode == 3 and "Another process is writing" in refused.stdout
    assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0  # free again


def _eval(out, limit, *extra):
    return [str(BIN / "fheads"), "eval", "--model", str(bundled_model_path()), "--bench", "shapes", "--out", str(out),
            "--limit", str(limit), "--batch-size", "1", "--max-new-tokens", "24", "--order", "file", *extra]


def _torchrun(processes: int, command: list[str]) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes), "--no-python", *command]


def _children_with_rank(parent: int, rank: int) -> list[int]:
    found = []
    for pid in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            found.append(int(pid))
    return found


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("results*.jsonl")) for line in f.read_text().splitlines()
            if line.strip() and line.endswith("}")]


@pytest.mark.slow
def test_torchrun_run_killed_then_resumed_on_one_and_three_processes_answers_each_item_once(tmp_path):
    """2 processes, one killed mid-run (torchrun stops the other); resumed by one process up to item 16,
    then by 3 processes up to item 24: every item answered once, the answers a one-process run gives."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    parallel = tmp_path / "parallel"
    launch = subprocess.Popen(_torchrun(2, _eval(parallel, 24)), env=environment, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, victim = time.time() + 180, None
    while time.time() < deadline and victim is None:
        files = list(parallel.glob("*/results.rank1.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 2:
            victim = next(iter(_children_with_rank(launch.pid, 1)), None)
        time.sleep(0.05)
    assert victim is not None, "rank 1 wrote nothing in three minutes"
    os.kill(victim, signal.SIGKILL)
    launch.wait(timeout=120)
    assert launch.returncode != 0
    folder = next(parallel.glob("shapes-vanilla-*"))
    after_kill = {r["id"] for r in _lines(folder)}
    assert 2 <= len(after_kill) < 24
    subprocess.run(_eval(parallel, 16), env=environment, check=True, capture_output=True)  # world size 1
    assert {r["id"] for r in _lines(folder)} >= {f"test-{i:06d}" for i in range(16)} | after_kill
    subprocess.run(_torchrun(3, _eval(parallel, 24)), env=environment, check=True, capture_output=True)
    assert sorted(folder.glob("results*.jsonl")) == [folder / f"results{s}.jsonl" for s in ("", ".rank1", ".rank2")]
    records = _lines(folder)
    ids = [r["id"] for r in records]
    assert len(ids) == 24 and len(set(ids)) == 24  # each item once, in one file
    single = tmp_path / "single"
    subprocess.run(_eval(single, 24), env=environment, check=True, capture_output=True)
    alone = {r["id"]: r for r in _lines(next(single.glob("shapes-vanilla-*")))}
    assert next(single.glob("shapes-vanilla-*")).name == folder.name  # same run identity for any world size
    assert {r["id"]: r["prediction"] for r in records} == {i: r["prediction"] for i, r in alone.items()}
    report = subprocess.run([str(BIN / "fheads"), "report", str(parallel)], capture_output=True, text=True, check=True)
    assert "24" in report.stdout


def test_a_bad_order_or_launcher_variable_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from functional_heads.apps.cli import app

    base = ["eval", "--model", str(bundled_model_path()), "--bench", "shapes", "--out", str(tmp_path), "--limit", "2"]
    result = CliRunner().invoke(app, base + ["--order", "random"])
    assert result.exit_code == 2 and "--order must be one of length, file" in result.output
    result = CliRunner().invoke(app, base, env={"RANK": "4", "WORLD_SIZE": "2"})
    assert result.exit_code == 2 and "0 <= RANK < WORLD_SIZE" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing left behind


@pytest.mark.slow
def test_accelerate_launch_runs_the_plain_command_data_parallel(tmp_path):
    pytest.importorskip("accelerate")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--no_python",
               *_eval(tmp_path, 10)]  # --multi_gpu: accelerate's multi-process mode; on a CPU each process uses it
    subprocess.run(command, env=environment, check=True, capture_output=True)
    folder = next(tmp_path.glob("shapes-vanilla-*"))
    assert sorted(f.name for f in folder.glob("results*.jsonl")) == ["results.jsonl", "results.rank1.jsonl"]
    ids = [r["id"] for r in _lines(folder)]
    assert len(ids) == 10 and len(set(ids)) == 10
