"""Peak memory of the evaluation loop on a large benchmark: `answering.answer_into_run` streaming the items
(read once to count, once to answer, a batch at a time) against holding every pending item first (the list of
pending examples, their images too, built before the first batch).

The items: N generated shapes items, images scaled to --side px, written as one parquet file with the JPEG
bytes inside, the layout of the hub's benchmark copies (MathVista, MMStar, ...). Answering is a stub that returns at once, so the figure is
the loop's own memory, not the model's. Each variant runs in a fresh process. Two figures: the peak of live
Python objects during the loop (tracemalloc: what the loop holds), and the process's resident high-water mark
(VmHWM, reset first) minus its resident set before the loop (what the OS sees; it also counts memory the
allocator keeps after objects are freed, and decoding buffers).

    python benchmarks/eval_memory.py [--items 20000] [--side 448]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_parquet(folder: Path, n: int, side: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from functional_heads.evaluation.benchmarks import shapes_generator as shapes

    rows = []
    for item in shapes.items("train", n):
        png = io.BytesIO()  # scaled up to a real benchmark's image size, JPEG as most hub copies store them
        item.scene.render().resize((side, side)).save(png, format="JPEG", quality=90)
        rows.append({"id": item.id, "split": item.split, "family": item.family, "question": item.question,
                     "chain": item.chain, "answer": item.answer, "variant": item.variant,
                     "scene": json.dumps([list(c) if c else None for c in item.scene.cells]),
                     "image": {"bytes": png.getvalue(), "path": None}})
    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)  # `datasets` writes image rows so
    return path


@dataclass
class _Out:
    tokens: object
    prompt_length: int
    heads_rescaled: list


class Stub:
    """A method that answers at once (the loop's memory, not a model's)."""

    name = "stub"

    def identity(self):
        return {}

    def generate(self, model, processor, images, prompts, **_):
        import torch

        return _Out(torch.zeros(len(prompts), 2, dtype=torch.long), 1, [0.0] * len(prompts))


class Decoder:
    def batch_decode(self, tokens, **_):
        return ["<answer>0</answer>"] * len(tokens)


def measure(variant: str, path: Path, out: Path) -> dict:
    from functional_heads.evaluation.answering import answer_into_run
    from functional_heads.evaluation.engine import HFBackend
    from functional_heads.evaluation.runs import Run

    benchmark = _Shapes()
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (ru_maxrss survives exec)
        f.write("5")
    before = _status_kib("VmRSS")
    tracemalloc.start()
    source = (lambda: benchmark.examples(path, "train")) if variant == "streamed" else \
        list(benchmark.examples(path, "train"))  # every item held, images too
    run = Run.open(out, {"benchmark": "shapes", "method": variant, "model": "stub"})
    answer_into_run(run, HFBackend(None, Decoder()), benchmark, source, Stub(), batch_size=8, progress=False)
    live_peak = tracemalloc.get_traced_memory()[1]
    peak = _status_kib("VmHWM")
    return {"variant": variant, "items": len(run.records), "resident_peak_above_start_mb": (peak - before) / 1024,
            "python_objects_peak_mb": live_peak / 2**20}


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _Shapes():
    """The shapes benchmark reading its scene from a JSON string (parquet keeps nested None cells awkwardly)."""
    from functional_heads.evaluation.benchmarks.shapes import Shapes

    class FromParquet(Shapes):
        def example(self, row, index):
            return super().example({**row, "scene": json.loads(row["scene"])}, index)

    return FromParquet()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--side", type=int, default=448, help="image side in pixels")
    parser.add_argument("--variant", choices=["streamed", "held"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one measurement, in its own process
        print(json.dumps(measure(args.variant, args.data, args.out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = write_parquet(Path(tmp), args.items, args.side)
        print(f"{args.items} items, {args.side} px JPEG images, parquet {path.stat().st_size / 2**20:.1f} MB")
        for variant in ("held", "streamed"):
            result = subprocess.run([sys.executable, __file__, "--variant", variant, "--data", str(path), "--out",
                                     str(Path(tmp) / variant)], capture_output=True, text=True, check=True)
            print(result.stdout.strip())


if __name__ == "__main__":
    main()
