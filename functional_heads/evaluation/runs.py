"""Run folders that never lose work, and the one batched generation path every caller goes through.

A run folder is named `{benchmark}-{method}-{hash}`, the hash covering every setting that affects results
(`run_identity`: model, data, split, benchmark options, method identity, dtype, decoding, judge).
`run.json` holds those settings; `results.jsonl` one record per item: id, gold, prediction, extracted,
score, seconds, error (and the benchmark's category, info and failure label, and the share of heads the
method rescaled); `log.txt` the progress lines. Under a launcher (`distributed.Shard`), rank r > 0 writes
`results.rank{r}.jsonl` and `log.rank{r}.txt` instead, and a run's records are those of all its results
files. Restarted, under any number of processes, a run skips the ids already written by anyone; a torn last
line (a kill mid-write) is dropped and its item done again. `limit`, the batch size, the order and the
world size are not part of the identity: a longer run continues a shorter one. Items are streamed from the
data, never all held at once. The folder is made when answering starts and removed again if a one-process
run fails before its first record, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..utils.progress import progress as progress_lines
from .benchmarks import Benchmark, Example, Unusable
from .distributed import Shard
from .seeding import seeded, text_seed

RESULTS, SPEC, LOG = "results.jsonl", "run.json", "log.txt"
RESULTS_FILES = "results*.jsonl"  # rank 0's results.jsonl and the other ranks' results.rank{r}.jsonl
ORDERS = ("length", "file")
# What a Run keeps in memory of each record (resume, summaries); the answers' text stays on disk (`Run.read`),
# so memory grows by a few hundred bytes per item, not by the chains of thought.
SUMMARY_FIELDS = ("id", "score", "error", "category", "failure", "seconds", "heads_rescaled")


def settings_hash(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def prompt_hash(prompt: str) -> str:
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Decoding:
    """How answers are decoded: greedy by default; with `sample`, at `temperature`, seeded per batch."""

    max_new_tokens: int = 1024
    sample: bool = False
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.temperature < 0:
            raise ValueError(f"Decoding needs max_new_tokens >= 1 and temperature >= 0, got {self}.")

    def identity(self) -> dict:
        identity = {"max_new_tokens": self.max_new_tokens, "do_sample": self.sample}
        return {**identity, "temperature": self.temperature, "seed": self.seed} if self.sample else identity

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": self.sample}
        return {**kwargs, "temperature": self.temperature} if self.sample else kwargs


def run_identity(model: str | Path, benchmark: Benchmark, method, data: str | Path | None = None,
                 split: str | None = None, dtype: str = "auto", decoding: Decoding = Decoding(),
                 judge=None) -> dict:
    """Every setting that affects a run's results: what `Run.open` names and checks the folder by. The CLI,
    the Python API and the demo build it here, so each reproduces the others' folders."""
    return {"benchmark": benchmark.name, "method": method.name, "model": str(Path(model).resolve()),
            "data": str(Path(data).resolve()) if data is not None else None,
            "split": split or benchmark.default_split, "options": dict(benchmark.options), "dtype": dtype,
            **method.identity(), "generation": decoding.identity(),
            "judge": {"url": judge.url, "model": judge.model} if judge is not None else None}


@dataclass
class Run:
    """A run folder (made when answering starts): its settings and a summary (`SUMMARY_FIELDS`) of the records
    already written, by this process (`shard`) and by any other; `read()` gives the whole records."""

    folder: Path
    settings: dict
    records: dict[str, dict] = field(default_factory=dict)
    shard: Shard = Shard()

    @classmethod
    def open(cls, out: str | Path, settings: dict, shard: Shard = Shard()) -> "Run":
        """The run of these settings under `out` (see `run_identity`), with what it already holds."""
        folder = Path(out) / f"{settings['benchmark']}-{settings['method']}-{settings_hash(settings)}"
        spec = folder / SPEC
        if spec.is_file():
            if json.loads(spec.read_text())["settings"] != json.loads(json.dumps(settings, default=str)):
                raise ValueError(f"{spec} holds other settings than this run's; move that folder away.")
        records = run_records(folder, repair=f"results{shard.suffix}.jsonl")
        return cls(folder, settings, {key: _summary(r) for key, r in records.items()}, shard)

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
            partial = self.folder / f".{SPEC}.{os.getpid()}"
            partial.write_text(json.dumps({"settings": self.settings, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
                                          indent=1, default=str))
            os.replace(partial, self.folder / SPEC)

    def discard_if_empty(self) -> None:
        """Remove the folder of a one-process run that holds no record (it failed before its first batch);
        under a launcher another rank may be writing, so the folder stays."""
        if self.shard.world_size == 1 and not self.records and self.folder.is_dir() \
                and not any(f.stat().st_size for f in self.folder.glob(RESULTS_FILES)):
            shutil.rmtree(self.folder, ignore_errors=True)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Within the block this process holds its results file; a second process given the same rank of the
        same run (two launches at once) is refused instead of interleaving lines."""
        self.start()
        with open(self.results_file, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"Another process is writing {self.results_file}: is an earlier launch of this run "
                                 "still going? Wait for it or stop it, then rerun.") from None
            try:
                yield
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

    def usable_records(self) -> list[dict]:
        return [r for r in self.records.values() if r.get("error") is None]


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
            record = json.loads(line)
        except json.JSONDecodeError:
            if number >= len(lines) - 2 and (last or not any(x.strip() for x in lines[number + 1:])):
                break  # torn last line
            raise ValueError(f"{path}:{number + 1} is not valid JSON; the run folder is damaged.") from None
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


def length_sorted(examples: Iterable, window: int) -> Iterator:
    """The examples, each run of `window` of them sorted by prompt length (text-only questions after those
    with an image), so that a batch pads little; memory stays bounded by the window."""
    def key(example):
        return (0, 0) if isinstance(example, Unusable) else (example.image is None, len(example.prompt))

    iterator = iter(examples)
    while chunk := list(islice(iterator, window)):
        yield from sorted(chunk, key=key)


def answer_batches(model, processor, benchmark: Benchmark, examples: Iterable[Example | Unusable], method,
                   decoding: Decoding = Decoding(), batch_size: int = 8, judge=None,
                   order: str = "file") -> Iterator[list[dict]]:
    """The records of the examples, `batch_size` at a time: the one path from examples to scored answers
    (`fheads eval`, the demo, training's dev checks). Unusable rows are recorded with their reason. With
    order="length", batches are formed from prompts of similar length (`length_sorted`, 16 batches at a time)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}.")
    if order == "length":
        examples = length_sorted(examples, 16 * batch_size)
    batch: list = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield _answer_batch(model, processor, benchmark, batch, method, decoding, judge)
            batch = []
    if batch:
        yield _answer_batch(model, processor, benchmark, batch, method, decoding, judge)


def answer_all(model, processor, benchmark: Benchmark, examples: list, method, decoding: Decoding = Decoding(),
               batch_size: int = 8, judge=None, progress: bool = False) -> list[dict]:
    """`answer_batches` into one list, kept in memory (no run folder), with optional progress."""
    records = []
    with progress_lines(f"{benchmark.name} {method.name}", len(examples), enabled=progress) as advance:
        for batch in answer_batches(model, processor, benchmark, examples, method, decoding, batch_size, judge):
            records += batch
            advance(len(batch))
    return records


def fill(run: Run, model, processor, benchmark: Benchmark, examples: Iterable | Callable[[], Iterable], method,
         decoding: Decoding = Decoding(), batch_size: int = 8, limit: int | None = None, judge=None,
         progress: bool = True, order: str = "file") -> Run:
    """Answer every example of the first `limit` that this process's shard owns and no process has written
    yet, writing each batch's records as soon as it is done. `examples` is a list or a function returning a
    fresh iterator over them (then they are streamed: read once to count, once to answer). Progress is
    shown out of this process's whole share and logged to its log file."""
    source = examples if callable(examples) else (lambda items=list(examples): items)

    def mine() -> Iterator:
        return (e for i, e in enumerate(islice(source(), limit)) if run.shard.owns(i))

    everything, share, done = 0, 0, 0
    for index, example in enumerate(islice(source(), limit)):
        everything += 1
        if run.shard.owns(index):
            share += 1
            done += example.id in run.records
    if everything == 0:
        raise ValueError(f"{benchmark.name}: the data holds no items (check --data and --split).")
    if done == share:
        return run
    name = " ".join(filter(None, [benchmark.name, method.name, run.shard.label]))
    todo = (example for example in mine() if example.id not in run.records)
    try:
        with run.writing(), progress_lines(name, share, done, log_file=run.log_file, enabled=progress) as advance:
            for records in answer_batches(model, processor, benchmark, todo, method, decoding, batch_size, judge,
                                          order):
                run.append(records)
                advance(len(records))
    except BaseException:
        run.discard_if_empty()
        raise
    return run


def _answer_batch(model, processor, benchmark, batch, method, decoding: Decoding, judge=None) -> list[dict]:
    """Records of one batch, in its order. Questions without an image go to the method as a text-only batch
    of their own (`images=None`)."""
    records, groups = {}, {True: ([], []), False: ([], [])}
    for example in batch:
        if isinstance(example, Unusable):
            records[example.id] = {"id": example.id, "error": example.reason, "score": None}
            continue
        try:
            image = example.load_image()
        except (OSError, ValueError) as err:
            records[example.id] = {"id": example.id, "gold": example.gold, "error": f"unusable image: {err}",
                                   "score": None, "category": example.category}
            continue
        groups[image is not None][0].append(example)
        groups[image is not None][1].append(image)
    for with_image, (ready, images) in groups.items():
        if ready:
            records.update((r["id"], r) for r in _answered(model, processor, benchmark, ready,
                                                             images if with_image else None, method, decoding, judge,
                                                             seed_id=batch[0].id))
    return [records[example.id] for example in batch]


def _answered(model, processor, benchmark, ready, images, method, decoding, judge, seed_id) -> list[dict]:
    start = time.perf_counter()
    prompts = [e.prompt for e in ready]
    if decoding.sample:  # seeded per batch by its first item: a resumed run draws the same
        with seeded(text_seed(f"{decoding.seed}/{seed_id}"), model.device):
            out = method.generate(model, processor, images, prompts, **decoding.generate_kwargs())
    else:
        out = method.generate(model, processor, images, prompts, **decoding.generate_kwargs())
    seconds = (time.perf_counter() - start) / len(ready)
    texts = processor.batch_decode(out.tokens[:, out.prompt_length:], skip_special_tokens=True)
    records = []
    for example, text, share in zip(ready, texts, out.heads_rescaled):
        judged = judge.judged(example.prompt, text) if judge is not None and not benchmark.truncated(text) else None
        scored = benchmark.score_output(example, judged or text)
        records.append({"id": example.id, "gold": example.gold, "prediction": text, "judged": judged,
                        "extracted": scored.extracted, "score": scored.score, "seconds": seconds, "error": None,
                        "category": example.category, "prompt": example.prompt,
                        "prompt_sha": prompt_hash(example.prompt), "failure": scored.failure,
                        "heads_rescaled": share, "image": images is not None, "info": example.info})
    return records
