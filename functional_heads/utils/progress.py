"""Progress of long loops, visible alike in a terminal, in a redirected output and in a log file.

In a terminal: a rich bar. Otherwise (output to a file or a pipe, as `setup.sh > log` or CI): a plain
line every tenth of the way or every 30 seconds, so a log never stays silent for minutes. With
`log_file`, the same lines are appended there too. Counts are out of the whole job: a resumed run
starts at what was already done. `library_bars` keeps transformers' own bars (loading weights, writing
shards) out of such output too.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LINE_EVERY_S = 30.0


def file_logger(path: Path, echo: bool) -> Callable[[str], None]:
    """A log function: each message timed, appended to `path`, and printed to stderr when `echo`."""
    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        with open(path, "a") as f:
            f.write(line + "\n")
        if echo:
            print(line, file=sys.stderr, flush=True)
    return log


class _Lines:
    """Plain progress lines to a stream and/or a log file."""

    def __init__(self, description: str, total: int, completed: int, unit: str, stream, log_file: Path | None):
        self.description, self.total, self.done, self.unit = description, total, completed, unit
        self.stream, self.log_file = stream, log_file
        self.start_done, self.start = completed, time.perf_counter()
        self.last_line, self.next_share = 0.0, 0.1
        self.line(f"{description}: {completed}/{total} {unit} done, starting")

    def line(self, text: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {text}"
        if self.stream is not None:
            print(stamped, file=self.stream, flush=True)
        if self.log_file is not None:
            with open(self.log_file, "a") as f:
                f.write(stamped + "\n")
        self.last_line = time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        share = self.done / self.total if self.total else 1.0
        if share >= self.next_share or now - self.last_line >= LINE_EVERY_S or self.done >= self.total:
            while self.next_share <= share:
                self.next_share += 0.1
            rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            self.line(f"{self.description}: {self.done}/{self.total} {self.unit} ({share:.0%}), {rate:.2f} {self.unit}/s"
                      + (f", about {left:.0f} s left" if self.done < self.total and left == left else ""))


@contextmanager
def progress(description: str, total: int, completed: int = 0, unit: str = "items",
             log_file: str | Path | None = None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. A bar in a terminal, plain lines otherwise; lines also to `log_file`."""
    log_file = Path(log_file) if log_file is not None else None
    terminal = enabled and Console(file=sys.stderr).is_terminal
    lines = _Lines(description, total, completed, unit, None if terminal or not enabled else sys.stderr, log_file) \
        if (enabled and not terminal) or log_file is not None else None
    if not terminal:
        yield lines.advance if lines is not None else (lambda n: None)
        return
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task("", total=total, completed=completed)

        def advance(n: int) -> None:
            bar.advance(task, n)
            if lines is not None:
                lines.advance(n)

        yield advance


def _stderr_is_terminal() -> bool:
    return Console(file=sys.stderr).is_terminal


@contextmanager
def library_bars() -> Iterator[None]:
    """transformers' own tqdm bars (and huggingface_hub's, which it switches with them) stay as they are in a
    terminal and are off within the block otherwise: in a log file or a pipe their carriage returns run
    together into one long line. On exit both libraries' settings are back as the caller had them."""
    if _stderr_is_terminal():
        yield
        return
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging

    ours, hubs = hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ours:
            hf_logging.enable_progress_bar()  # switches huggingface_hub's on too
        if hubs:
            hub.disable_progress_bars()
        elif hub.are_progress_bars_disabled():
            hub.enable_progress_bars()
