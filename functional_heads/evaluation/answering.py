"""A run folder filled by the engine: the items a run does not hold yet, answered (`engine.answer_batches`)
and written batch by batch (`runs.Run.append`), under the run's writing lock, with progress in its log."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from ..utils.errors import UserError
from ..utils.progress import progress as progress_lines
from .benchmarks import Benchmark
from .engine import LONG_PROMPT, Backend, Decoding, answer_batches, check_order, warn_long_prompts
from .runs import Run


def answer_into_run(run: Run, backend: Backend, benchmark: Benchmark, examples: Iterable | Callable[[], Iterable],
                    method, decoding: Decoding = Decoding(), batch_size: int = 8, limit: int | None = None,
                    judge=None, progress: bool = True, order: str = "file") -> Run:
    """Answer every example of the first `limit` that this process's shard owns and no process has written
    yet, writing each batch's records as soon as it is done. `examples` is a list or a function returning a
    fresh iterator over them (then they are streamed: read once to count, once to answer). Progress is
    shown out of this process's whole share and logged to its log file."""
    check_order(order)
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
        raise UserError(f"{benchmark.name}: the data holds no items (check --data and --split).")
    if done == share:
        return run
    name = " ".join(filter(None, [benchmark.name, method.name, run.shard.label]))
    todo = (example for example in mine() if example.id not in run.records)
    long = []  # items whose prompt exceeds the model's context: one warning for the run
    with run.writing(), progress_lines(name, share, done, log_file=run.log_file, enabled=progress) as advance:
        for records in answer_batches(backend, benchmark, todo, method, decoding, batch_size, judge, order):
            run.append(records)
            advance(len(records))
            long += [r for r in records if LONG_PROMPT in str(r.get("error") or "")]
    warn_long_prompts(long, name)
    return run
