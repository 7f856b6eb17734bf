"""Run folders that never lose work: a run's identity and its storage.

A run folder is named `{benchmark}-{method}-{hash}`, the hash covering every setting that affects results
(`run_identity`: the model's fingerprint, data, split, benchmark options, method identity, dtype, decoding,
backend, judge). `run.json` holds those settings, and beside them (`about`, outside the identity) where the
model folder was; `results.jsonl` one record per item: id, gold, prediction, extracted, score, seconds,
error (and the benchmark's category, info and failure label, and the share of heads the method rescaled);
`log.txt` the progress lines. Under a launcher (`distributed.Shard`), rank r > 0 writes
`results.rank{r}.jsonl` and `log.rank{r}.txt` instead, and a run's records are those of all its results
files. Restarted, under any number of processes, a run skips the ids already written by anyone; a torn last
line (a kill mid-write) is dropped and its item done again. `limit`, the batch size, the order and the
world size are not part of the identity: a longer run continues a shorter one. The model is identified by
its content (`models.identity.model_fingerprint`), so a moved checkpoint keeps its runs and new weights at
an old path get runs of their own. The folder is made when answering starts (`answering.answer_into_run`)
and removed again if a one-process run fails before its first record, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..models.identity import model_fingerprint
from ..utils.errors import UserError
from ..utils.files import atomic_write_text, read_json_named
from .benchmarks import Benchmark
from .distributed import Shard
from .engine import Decoding, HFBackend

RESULTS, SPEC, LOG = "results.jsonl", "run.json", "log.txt"
RESULTS_FILES = "results*.jsonl"  # rank 0's results.jsonl and the other ranks' results.rank{r}.jsonl
# What a Run keeps in memory of each record (resume, summaries); the answers' text stays on disk (`Run.read`),
# so memory grows by a few hundred bytes per item, not by the chains of thought.
SUMMARY_FIELDS = ("id", "score", "error", "category", "failure", "seconds", "heads_rescaled")


def settings_hash(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_identity(model: str | Path, benchmark: Benchmark, method, data: str | Path | None = None,
                 split: str | None = None, dtype: str = "auto", decoding: Decoding = Decoding(),
                 judge=None, backend: str = HFBackend.name) -> dict:
    """Every setting that affects a run's results: what `Run.open` names and checks the folder by. The model
    enters by what it is (`model_fingerprint`), not by where it lies."""
    return {"benchmark": benchmark.name, "method": method.name, "model": model_fingerprint(model),
            "data": str(Path(data).resolve()) if data is not None else None,
            "split": split or benchmark.default_split, "options": dict(benchmark.options), "dtype": dtype,
            **method.identity(), "generation": decoding.identity(), "backend": backend,
            "judge": {"url": judge.url, "model": judge.model} if judge is not None else None}


def open_run(out: str | Path, model: str | Path, benchmark: Benchmark, method, data: str | Path | None = None,
             split: str | None = None, dtype: str = "auto", decoding: Decoding = Decoding(), judge=None,
             backend: str = HFBackend.name, shard: Shard = Shard()) -> Run:
    """The run of these settings under `out` (`run_identity`), noting in its run.json where the model
    folder is (`about`). `fheads eval`, the Python API and the demo open their runs here, so each
    reproduces the others' folders."""
    return Run.open(out, run_identity(model, benchmark, method, data, split, dtype, decoding, judge, backend), shard,
                    about={"model_path": str(Path(model).resolve())})


@dataclass
class Run:
    """A run folder (made when answering starts): its settings and a summary (`SUMMARY_FIELDS`) of the records
    already written, by this process (`shard`) and by any other; `read()` gives the whole records."""

    folder: Path
    settings: dict
    records: dict[str, dict] = field(default_factory=dict)
    shard: Shard = Shard()
    about: dict = field(default_factory=dict)  # written to run.json beside the settings, not identifying the run

    @classmethod
    def open(cls, out: str | Path, settings: dict, shard: Shard = Shard(), about: dict | None = None) -> Run:
        """The run of these settings under `out` (see `run_identity`), with what it already holds."""
        folder = Path(out) / f"{settings['benchmark']}-{settings['method']}-{settings_hash(settings)}"
        spec = folder / SPEC
        if spec.is_file():
            if read_settings(spec) != json.loads(json.dumps(settings, default=str)):
                raise UserError(f"{spec} holds other settings than this run's; move that folder away.")
        records = run_records(folder, repair=f"results{shard.suffix}.jsonl")
        return cls(folder, settings, {key: _summary(r) for key, r in records.items()}, shard, dict(about or {}))

    def read(self) -> dict[str, dict]:
        """The whole records of every process, as on disk now."""
        return run_records(self.folder)

    @property
    def results_file(self) -> Path:
        return self.folder / f"results{self.shard.suffix}.jsonl"

    @property
    def log_file(self) -> Path:
        return self.folder / f"log{self.shard.suffix}.txt"

    def start(self) -> None:
        """Make the folder and write its run.json (once; ranks starting together write the same file
        through a rename, so none reads half of it)."""
        if not (self.folder / SPEC).is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            spec = {"settings": self.settings, **({"about": self.about} if self.about else {}),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_text(self.folder / SPEC, json.dumps(spec, indent=1, default=str))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Within the block this process holds its results file; a second process given the same rank of the
        same run (two launches at once) is refused instead of interleaving lines, and leaves the folder alone.
        If the block fails before the run holds any record, a folder this process made is removed again
        (while it still holds the lock), with the folders above it that it made and that are still empty
        (e.g. a new `--out`), so a failed one-process run leaves nothing behind; under a launcher another
        rank may be writing, so the folder stays."""
        made = [folder for folder in (self.folder, *self.folder.parents) if not folder.exists()]  # deepest first
        self.start()
        with open(self.results_file, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"Another process is writing {self.results_file}: is an earlier launch of this run "
                                "still going? Wait for it or stop it, then rerun.") from None
            try:
                yield
            except BaseException:
                if made and self.shard.world_size == 1 and not self.records \
                        and not any(f.stat().st_size for f in self.folder.glob(RESULTS_FILES)):
                    shutil.rmtree(self.folder, ignore_errors=True)
                    for parent in made[1:]:
                        try:
                            parent.rmdir()  # only while empty: another run may have started beside it
                        except OSError:
                            break
                raise
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, records: Iterable[dict]) -> None:
        self.start()
        with open(self.results_file, "a") as f:
            for record in records:
                f.write(json.dumps(record, default=str) + "\n")
                self.records[record["id"]] = _summary(record)
            f.flush()
            os.fsync(f.fileno())


def read_settings(spec: Path) -> dict:
    """The settings of a run.json; a damaged one is one line naming it and what to do."""
    fix = "the run folder is damaged: restore its run.json, or move the folder away to start the run afresh."
    data = read_json_named(spec, fix)
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise UserError(f"{spec}: holds no 'settings' object; {fix}")
    return data["settings"]


def _summary(record: dict) -> dict:
    return {key: record[key] for key in SUMMARY_FIELDS if key in record}


def run_records(folder: Path, repair: str | None = None) -> dict[str, dict]:
    """The records of all results files of a run folder. Only the file named `repair` (this process's own) is
    repaired; another rank's torn last line may be a write in progress, so it is only left out."""
    records = {}
    for path in sorted(Path(folder).glob(RESULTS_FILES)):
        records.update(read_records(path, repair=path.name == repair))
    return records


def read_records(path: Path, repair: bool = False) -> dict[str, dict]:
    """Records by id. A last line without its newline or not valid JSON is a torn write: with repair it is
    cut off the file (its item will be done again); any other bad line is an error."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    records, good_bytes = {}, 0
    for number, line in enumerate(lines):
        last = number == len(lines) - 1
        if not line.strip():
            good_bytes += len(line) + (0 if last else 1)
            continue
        try:
            record = json.loads(line)  # bytes: a byte-order mark is read as such
        except ValueError as err:  # not JSON, or not UTF-8
            if number >= len(lines) - 2 and (last or not any(x.strip() for x in lines[number + 1:])):
                break  # torn last line
            raise UserError(f"{path}:{number + 1} is not valid JSON ({err}); the run folder is damaged: remove that "
                            "line (its item is answered again on the next run).") from None
        if not isinstance(record, dict) or record.get("id") is None:
            raise UserError(f"{path}:{number + 1} is not a record with an id; the run folder is damaged: remove that "
                            "line (its item is answered again on the next run).")
        if last:  # valid JSON but no newline yet: keep it and end the line
            records[record["id"]] = record
            if repair:
                with open(path, "ab") as f:
                    f.write(b"\n")
            return records
        records[record["id"]] = record
        good_bytes += len(line) + 1
    if repair and good_bytes < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return records
