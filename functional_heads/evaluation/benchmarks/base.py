"""What every benchmark is: rows read from a local copy, turned into prompts, scored, summed up.

A benchmark module subclasses `Benchmark` and fills in four things: `name`, `example(row)` (a row of
the dataset -> an `Example`), `score(example, output)` and, if its community reports more than accuracy,
`metrics(records)`. Reading the data (hub parquet files, a `datasets.save_to_disk` folder or JSONL with
image files) is shared here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from ...utils.errors import UserError
from ...utils.files import read_json_named, text_lines
from ...utils.images import image_name, read_image
from ...utils.imports import requires
from ..stats import bootstrap_ci
from . import answers


@dataclass
class Example:
    """One question: its image (decoded lazily), the prompt the model sees, the gold answer."""

    id: str
    image: Any  # a PIL image, a {'bytes', 'path'} dict as stored in parquet, a path, or None (text only)
    prompt: str
    gold: Any
    category: str = ""
    info: dict = field(default_factory=dict)  # what scoring and metrics need beyond the gold answer
    base: Path | None = None  # folder that relative image paths start from
    source: str = ""  # where its row is (file:line, file row N), for messages

    def load_image(self) -> Image.Image | None:
        """The image as 8-bit RGB, or None for a question asked without one; `UnusableImage` (naming the
        image) if it cannot be read."""
        return None if self.image is None else open_image(self.image, self.base)

    @property
    def image_name(self) -> str:
        """The image's file (or what it is) as messages name it."""
        return image_name(_single(self.image), self.base)


@dataclass
class Unusable:
    """A row that cannot be asked (missing or unreadable image, malformed row): recorded, then skipped."""

    id: str
    reason: str


@dataclass
class Scored:
    extracted: Any
    score: float
    failure: str | None = None  # a benchmark's own label for a wrong answer (shapes: perceptual / drift)


class Benchmark:
    name: str = ""
    default_split: str = "test"
    needs_data: bool = True  # False where items can be made without a local copy (shapes)
    truncation_rule: bool = True  # a chain of thought never closed (token limit) has no final answer
    instruction: str = ""  # appended to every prompt; reported with the results
    failure_labels: tuple[str, ...] = ()  # the labels `score` gives wrong answers, if it classifies them

    def __init__(self, **options: str):
        unknown = set(options) - set(self.option_names)
        if unknown:
            raise UserError(f"{self.name} takes no option {', '.join(sorted(unknown))}"
                            + (f" (it takes: {', '.join(self.option_names)})" if self.option_names else "."))
        self.options = options

    option_names: tuple[str, ...] = ()

    def example(self, row: dict, index: int) -> Example | None:
        """The row as an example; None for rows outside the benchmark (e.g. SEED-Bench's video part)."""
        raise NotImplementedError

    def score(self, example: Example, output: str) -> Scored:
        raise NotImplementedError

    def truncated(self, output: str) -> bool:
        return self.truncation_rule and answers.is_truncated(output)

    def score_output(self, example: Example, output: str) -> Scored:
        """The score of a model output: a truncated one is unanswered (failure 'truncated'), the rest the
        benchmark's own rule decides."""
        if self.truncated(output):
            return Scored(None, 0.0, "truncated")
        return self.score(example, output)

    def metrics(self, records: list[dict]) -> dict:
        """Accuracy with a 95% bootstrap interval, overall and per category, from the run's records."""
        scores = [r["score"] for r in records]
        result = {"accuracy": mean_or_none(scores), "ci95": bootstrap_ci(scores) if scores else [None, None]}
        if self.truncation_rule:  # rows cut off by the token limit, scored as unanswered
            result["truncated_rate"] = mean_or_none(r.get("failure") == "truncated" for r in records)
        categories = sorted({r.get("category", "") for r in records} - {""})
        if categories:
            result["categories"] = {c: mean_or_none([r["score"] for r in records if r.get("category") == c])
                                    for c in categories}
        return result

    def examples(self, path: str | Path, split: str | None = None) -> Iterator[Example | Unusable]:
        """The rows of a local copy as examples, in order; a row that cannot be asked is an `Unusable` with
        its reason. Two rows with one id would store one answer over the other: that is an error naming both."""
        seen: dict[str, str] = {}
        for index, (row, base, where) in enumerate(located_rows(path, split or self.default_split)):
            item = self._item(row, index, base, where)
            if item is None:
                continue
            if item.id in seen:
                raise UserError(f"{where}: item id '{item.id}' is also the id of {seen[item.id]}; answers are "
                                "stored by id, so each row needs its own: fix or remove one of the two rows.")
            seen[item.id] = where
            yield item

    def _item(self, row: dict, index: int, base: Path, where: str) -> Example | Unusable | None:
        if row.get("_malformed"):
            return Unusable(row["id"], f"malformed row ({where}): {row.get('reason', 'not valid JSON')}")
        try:
            example = self.example(row, index)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as err:
            return Unusable(str(_row_id(row, index)), f"malformed row ({where}): {type(err).__name__}: {err}")
        if example is not None:
            example.base, example.source = base, where
        return example


def mean_or_none(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _row_id(row, index) -> Any:
    if isinstance(row, dict):
        for key in ("id", "pid", "question_id", "index", "data_id"):
            if row.get(key) is not None:
                return row[key]
    return index


# ---------------------------------------------------------------- reading local copies

def read_rows(path: str | Path, split: str) -> Iterator[tuple[dict, Path]]:
    """Rows of a local dataset copy and the folder its relative image paths start from. Accepts the
    parquet files of a hub repository (a file or a folder; files whose name holds `split` are taken when
    there are several splits), a `datasets.save_to_disk` folder, a JSONL / JSON file, or a folder holding
    `{split}.jsonl`. A JSON line or item that is not a JSON object is `{"id", "_malformed": True, "reason"}`."""
    for row, base, _ in located_rows(path, split):
        yield row, base


def located_rows(path: str | Path, split: str) -> Iterator[tuple[dict, Path, str]]:
    """`read_rows` with where each row is (file:line, file row N, ...), for messages."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Data path {path} does not exist.")
    if path.is_dir() and (path / f"{split}.jsonl").is_file():  # a folder `fheads data shapes` wrote
        yield from ((row, path, where) for row, where in _jsonl_rows(path / f"{split}.jsonl"))
    elif path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        yield from ((row, path, where) for row, where in _saved_dataset_rows(path, split))
    elif path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
        for file in _parquet_files(path, split):
            yield from ((row, file.parent, where) for row, where in _parquet_rows(file))
    elif path.suffix == ".jsonl" and path.is_file():
        yield from ((row, path.parent, where) for row, where in _jsonl_rows(path))
    elif path.suffix == ".json" and path.is_file():
        yield from ((row, path.parent, where) for row, where in _json_file_rows(path))
    elif path.is_dir() and (splits := sorted(f.stem for f in path.glob("*.jsonl"))):
        raise UserError(f"{path} holds the splits {', '.join(splits)}, not '{split}': pass one of them as --split.")
    elif path.is_dir() and (images := sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)):
        yield from (({"id": f.stem, "image": f.name}, path, str(f)) for f in images)  # a folder of images
    else:
        raise UserError(f"Cannot read {path}: give the dataset's parquet files (a file or folder), a "
                        "datasets.save_to_disk folder, a .jsonl file with image paths, or a folder of images.")


ALL_SPLITS = "all"  # every split of a local copy (parquet files, a saved DatasetDict)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _parquet_files(path: Path, split: str) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    # hub layouts: data/testmini-00000-of-00001.parquet, testmini/0000.parquet, val.parquet; "test" is not
    # "testmini" and "image" is not "non_image"
    if split == ALL_SPLITS:
        return files
    pattern = re.compile(rf"^{re.escape(split)}([-_.]|$)")
    chosen = [f for f in files if pattern.search(f.name) or f.parent.name == split]
    return chosen or files


def _parquet_rows(file: Path) -> Iterator[tuple[dict, str]]:
    requires(f"Reading {file}", "pyarrow")
    import pyarrow.parquet as pq

    number = 0
    try:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                number += 1
                yield row, f"{file} row {number}"
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        where = f" after row {number}" if number else ""
        raise UserError(f"{file} is not a readable parquet file{where} ({err}); download it again.") from None


def _saved_dataset_rows(path: Path, split: str) -> Iterator[tuple[dict, str]]:
    requires(f"Reading {path} (a datasets.save_to_disk folder)", "datasets")
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path} is not a readable datasets.save_to_disk folder ({err}); save it again.") from None
    if isinstance(data, datasets.DatasetDict):
        if split != ALL_SPLITS and split not in data:
            raise UserError(f"{path} has splits {', '.join(data)}, not '{split}': pass --split.")
        for name in (data if split == ALL_SPLITS else [split]):
            yield from ((row, f"{path} split {name} row {n}") for n, row in enumerate(data[name], 1))
        return
    yield from ((row, f"{path} row {n}") for n, row in enumerate(data, 1))


def _malformed(ident: str, reason: str) -> dict:
    return {"id": ident, "_malformed": True, "reason": reason}


def _object_or_malformed(row: Any, ident: str) -> dict:
    """The row if it is a JSON object, else a malformed row saying what it is."""
    if isinstance(row, dict):
        return row
    return _malformed(ident, f"a JSON {type(row).__name__.replace('dict', 'object')}, not an object of the "
                             "row's fields")


def _jsonl_rows(path: Path) -> Iterator[tuple[dict, str]]:
    for number, line in text_lines(path):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                row = _malformed(f"line-{number}", f"not valid JSON ({err.msg})")
            yield _object_or_malformed(row, f"line-{number}"), f"{path}:{number}"


def _json_file_rows(path: Path) -> Iterator[tuple[dict, str]]:
    data = read_json_named(path, "fix the file, or give a JSONL file with one row per line.")
    if isinstance(data, list):
        yield from ((_object_or_malformed(row, f"item-{n}"), f"{path} item {n}") for n, row in enumerate(data, 1))
    elif isinstance(data, dict):
        yield from ((_object_or_malformed(row, f"entry-{key}"), f"{path} entry '{key}'") for key, row in data.items())
    else:
        raise UserError(f"{path} holds a JSON {type(data).__name__}, not a list of rows (or an object of them); "
                        "give the dataset's rows.")


def _single(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value  # SEED-Bench stores a list with one image


def open_image(value: Any, base: Path | None = None) -> Image.Image:
    """An 8-bit RGB image from whatever the dataset stores: an image, encoded bytes, or a path (see
    `utils.images.read_image`); `UnusableImage` naming the image if it cannot be read."""
    return read_image(_single(value), base)


def first_present(row: dict, *keys: str) -> Any:
    """The first of `keys` that the row holds with a value (datasets name the same field differently)."""
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    raise KeyError(" / ".join(keys))
