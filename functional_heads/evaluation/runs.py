"""Runs that never lose work: one JSONL line per finished item, resumable, one folder per setting.

A run folder is named `{benchmark}-{method}-{hash}`, the hash covering every setting that affects results
(model, data, split, benchmark options, method settings, decoding). `run.json` holds those settings;
`results.jsonl` one record per item: id, gold, prediction, extracted, score, seconds, error (and the
benchmark's category, info and failure label). Restarted, a run skips the ids already written; a torn
last line (a kill mid-write) is dropped and its item done again. `--limit` and the batch size are not
part of the identity: a longer run continues a shorter one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from .benchmarks import Benchmark, Example, Unusable

RESULTS, SPEC = "results.jsonl", "run.json"


def settings_hash(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def prompt_hash(prompt: str) -> str:
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


@dataclass
class Run:
    """An open run folder: its settings and the records already written."""

    folder: Path
    settings: dict
    records: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def open(cls, out: str | Path, benchmark: str, method: str, settings: dict) -> "Run":
        settings = {"benchmark": benchmark, "method": method, **settings}
        folder = Path(out) / f"{benchmark}-{method}-{settings_hash(settings)}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / SPEC
        if spec.is_file():
            if json.loads(spec.read_text())["settings"] != json.loads(json.dumps(settings, default=str)):
                raise ValueError(f"{spec} holds other settings than this run's; move that folder away.")
        else:
            spec.write_text(json.dumps({"settings": settings, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
                                       indent=1, default=str))
        return cls(folder, settings, read_records(folder / RESULTS, repair=True))

    def append(self, records: Iterable[dict]) -> None:
        with open(self.folder / RESULTS, "a") as f:
            for record in records:
                f.write(json.dumps(record, default=str) + "\n")
                self.records[record["id"]] = record
            f.flush()
            os.fsync(f.fileno())


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


def evaluate(model, processor, benchmark: Benchmark, examples: Iterable[Example | Unusable], method, run: Run,
             batch_size: int = 8, limit: int | None = None, progress: bool = True, judge=None,
             **generate_kwargs) -> Run:
    """Answer and score every example not yet in the run, `batch_size` at a time, writing each batch's
    records as soon as it is done. Unusable rows are recorded with their reason and skipped. With a
    `judge`, answers are extracted by it before the benchmark's rules score them."""
    todo, seen = [], 0
    for example in examples:
        if limit is not None and seen >= limit:
            break
        seen += 1
        if example.id not in run.records:
            todo.append(example)
    columns = (TextColumn(f"{benchmark.name} {method.name}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("", total=len(todo), rate="")
        start = time.perf_counter()
        for first in range(0, len(todo), batch_size):
            run.append(_answer_batch(model, processor, benchmark, todo[first:first + batch_size], method,
                                     generate_kwargs, judge))
            done = min(first + batch_size, len(todo))
            bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - start):.2f} items/s")
    return run


def _answer_batch(model, processor, benchmark, batch, method, generate_kwargs, judge=None) -> list[dict]:
    if generate_kwargs.get("do_sample"):  # seeded per batch by its first item: a resumed run draws the same
        torch.manual_seed(int(prompt_hash(f"{generate_kwargs.get('seed', 0)}/{batch[0].id}"), 16))
    generate_kwargs = {k: v for k, v in generate_kwargs.items() if k != "seed"}
    records, ready, images = [], [], []
    for example in batch:
        if isinstance(example, Unusable):
            records.append({"id": example.id, "error": example.reason, "score": None})
            continue
        try:
            images.append(example.load_image())
            ready.append(example)
        except (OSError, ValueError) as err:
            records.append({"id": example.id, "gold": example.gold, "error": f"unusable image: {err}",
                            "score": None, "category": example.category})
    if ready:
        start = time.perf_counter()
        tokens, prompt_length = method.generate(model, processor, images, [e.prompt for e in ready],
                                                **generate_kwargs)
        seconds = (time.perf_counter() - start) / len(ready)
        texts = processor.batch_decode(tokens[:, prompt_length:], skip_special_tokens=True)
        for example, text in zip(ready, texts):
            judged = judge.judged(example.prompt, text) if judge is not None else None
            scored = benchmark.score(example, judged or text)
            records.append({"id": example.id, "gold": example.gold, "prediction": text, "judged": judged,
                            "extracted": scored.extracted, "score": scored.score, "seconds": seconds, "error": None,
                            "category": example.category, "prompt": example.prompt,
                            "prompt_sha": prompt_hash(example.prompt),
                            "failure": scored.failure, "info": example.info})
    return records
