"""The answering engine: examples in, scored records out, through a generation backend.

A backend answers one batch: it gets the prompts, their images (None: text-only prompts), a method and the
decoding settings, and returns one `Answer` per prompt (the text, and the share of heads the method
rescaled). `HFBackend` is transformers' `generate()` behind the method's own `generate`; another backend
(vLLM) implements `Backend.answer` and is used the same way. Everything else here is backend-free: batching
(`length_sorted`, `answer_batches`, `answer_all`), loading images, a seed per batch for sampled draws,
timing, the optional judge and scoring. Run folders (`runs.py`) hold what this produces; `answering.py`
streams it into them.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import ClassVar, Protocol

from ..utils.errors import FunctionalHeadsWarning, UnusableImage, UserError
from ..utils.progress import progress as progress_lines
from .benchmarks import Benchmark, Example, Unusable
from .seeding import seeded, text_seed

DEFAULT_MAX_NEW_TOKENS = 1024  # the one default of the CLI, the Python API, tuning and the lmms-eval wrapper
ORDERS = ("length", "file")
ENGINES = ("hf", "vllm")  # `--engine`: transformers' generate (`HFBackend`), or vLLM (`vllm_engine.VLLMBackend`)


@dataclass(frozen=True)
class Decoding:
    """How answers are decoded: greedy by default; with `sample`, at `temperature`, seeded per batch."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    sample: bool = False
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.temperature < 0:
            raise UserError(f"Decoding needs max_new_tokens >= 1 and temperature >= 0, got {self}.")

    def identity(self) -> dict:
        """The settings that affect answers (part of a run's identity)."""
        identity = {"max_new_tokens": self.max_new_tokens, "do_sample": self.sample}
        return {**identity, "temperature": self.temperature, "seed": self.seed} if self.sample else identity

    def for_batch(self, key: str) -> Decoding:
        """These settings for the batch whose first item is `key`: a sampled batch draws from a seed of its
        own (so a resumed run draws the same, whatever ran before it); greedy decoding is unchanged."""
        return replace(self, seed=text_seed(f"{self.seed}/{key}")) if self.sample else self


@dataclass(frozen=True)
class Answer:
    """A backend's answer to one prompt."""

    text: str
    heads_rescaled: float  # the share of heads whose gain was not 1


class NonFiniteLogits(UserError):
    """A backend's model gave NaN or infinite logits: its answers would be empty or arbitrary. `rows` are the
    prompts of the batch concerned (None: the backend cannot tell which)."""

    def __init__(self, rows: list[int] | None, first_step: bool):
        self.rows, self.first_step = rows, first_step
        which = rows if rows is not None else "of the batch"
        super().__init__(f"The model's logits are NaN or infinite for prompt(s) {which} "
                         f"({'at the first step' if first_step else 'during generation'}).")


class Backend(Protocol):
    """What generates: `answer` one batch of prompts with a method. `name` enters the run identity (two
    backends may decode differently, so their runs are kept apart). A backend may also have
    `check_image(image, prompt)`, raising `UnusableImage` when the model cannot take that image (its
    processor's limits): the engine asks it of each item before the batch, so such an item is recorded as
    unusable instead of failing its batch on every rerun."""

    name: ClassVar[str]

    def answer(self, prompts: Sequence[str], images: Sequence | None, method,
               decoding: Decoding) -> list[Answer]:
        """One answer per prompt, in order. `images` holds one PIL image per prompt, or is None for text-only
        prompts. With `decoding.sample`, draws come from `decoding.seed` alone. Raises `PromptTooLong` for
        prompts longer than the model's context and `NonFiniteLogits` when the model's logits are not finite."""
        ...


class HFBackend:
    """transformers: the method's `generate` (hooks, logits processors, its own decoding loop) on a loaded
    model, its tokens decoded by the processor."""

    name: ClassVar[str] = "transformers"

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    @classmethod
    def load(cls, path: str | Path, dtype: str = "auto", device_map: str | dict | None = None,
             **kwargs) -> HFBackend:
        """The model folder's processor, then its model (a bad processor fails before the long load)."""
        from ..models.loading import load_model, load_processor  # here: the engine's names load without torch

        processor = load_processor(path)
        return cls(load_model(path, dtype=dtype, device_map=device_map, **kwargs), processor)

    def answer(self, prompts: Sequence[str], images: Sequence | None, method, decoding: Decoding) -> list[Answer]:
        kwargs = {"max_new_tokens": decoding.max_new_tokens, "do_sample": decoding.sample}
        if decoding.sample:
            kwargs["temperature"] = decoding.temperature
        with seeded(decoding.seed, self.model.device) if decoding.sample else nullcontext(), \
                finite_logits(self.model, len(prompts) if getattr(method, "one_row_per_prompt", True) else None):
            out = method.generate(self.model, self.processor, images, list(prompts), **kwargs)
        texts = self.processor.batch_decode(out.tokens[:, out.prompt_length:], skip_special_tokens=True)
        return [Answer(text, share) for text, share in zip(texts, out.heads_rescaled)]

    def check_image(self, image, prompt: str) -> None:
        """`UnusableImage` if the processor refuses this image with this prompt (see `check_image_input`)."""
        from ..models.loading import check_image_input  # here: the engine's names load without torch

        check_image_input(self.processor, image, prompt)


@contextmanager
def finite_logits(model, batch: int | None):
    """Raise `NonFiniteLogits` if the model's logits within the block are NaN or infinite. The first forward
    (the prompts' prefill, where broken weights or an overflow show) is checked at once, so that a broken
    model stops before it decodes; later ones are accumulated on the device, without a synchronisation,
    and checked when the block ends (or fails: sampling from NaN fails inside torch). Rows are named when
    the forwards have one row per prompt (`batch` prompts; None: they do not)."""
    import torch  # here: the engine's names load without torch (`fheads --help`)

    state = {"first": True, "rows": None, "any": None}

    def check(module, args, kwargs, output):
        logits = output[0] if isinstance(output, tuple) else getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            return
        bad = ~logits.detach().isfinite().flatten(1).all(-1)  # [rows]
        if state["first"]:
            state["first"] = False
            if bad.any():
                raise NonFiniteLogits(bad.nonzero().flatten().tolist() if bad.numel() == batch else None, True)
        elif bad.numel() == batch:
            state["rows"] = bad if state["rows"] is None else state["rows"] | bad.to(state["rows"].device)
        else:
            state["any"] = bad.any() if state["any"] is None else state["any"] | bad.any().to(state["any"].device)

    def raise_if_seen(cause=None):
        rows = state["rows"].nonzero().flatten().tolist() if state["rows"] is not None else []
        if rows or (state["any"] is not None and bool(state["any"])):
            raise NonFiniteLogits(rows or None, False) from cause

    if not isinstance(model, torch.nn.Module):  # a stand-in model (tests) has no forwards to watch
        yield
        return
    handle = model.register_forward_hook(check, with_kwargs=True)
    try:
        yield
    except RuntimeError as err:
        raise_if_seen(err)
        raise
    else:
        raise_if_seen()
    finally:
        handle.remove()


def prompt_hash(prompt: str) -> str:
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


def length_sorted(examples: Iterable, window: int) -> Iterator:
    """The examples, each run of `window` of them sorted by prompt length (text-only questions after those
    with an image), so that a batch pads little; memory stays bounded by the window."""
    def key(example):
        return (0, 0) if isinstance(example, Unusable) else (example.image is None, len(example.prompt))

    iterator = iter(examples)
    while chunk := list(islice(iterator, window)):
        yield from sorted(chunk, key=key)


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}.")


def check_order(order: str) -> None:
    if order not in ORDERS:
        raise UserError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}.")


def answer_batches(backend: Backend, benchmark: Benchmark, examples: Iterable[Example | Unusable], method,
                   decoding: Decoding = Decoding(), batch_size: int = 8, judge=None,
                   order: str = "file") -> Iterator[list[dict]]:
    """The records of the examples, `batch_size` at a time: the one path from examples to scored answers
    (`fheads eval`, the demo, tuning, training's dev checks). Unusable rows are recorded with their reason.
    With order="length", batches are formed from prompts of similar length (`length_sorted`, 16 batches at
    a time)."""
    check_order(order)
    if order == "length":
        examples = length_sorted(examples, 16 * batch_size)
    batch: list = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield _answer_batch(backend, benchmark, batch, method, decoding, judge)
            batch = []
    if batch:
        yield _answer_batch(backend, benchmark, batch, method, decoding, judge)


def answer_all(backend: Backend, benchmark: Benchmark, examples: list, method, decoding: Decoding = Decoding(),
               batch_size: int = 8, judge=None, progress: bool = False) -> list[dict]:
    """`answer_batches` into one list, kept in memory (no run folder), with optional progress."""
    records = []
    with progress_lines(f"{benchmark.name} {method.name}", len(examples), enabled=progress) as advance:
        for batch in answer_batches(backend, benchmark, examples, method, decoding, batch_size, judge):
            records += batch
            advance(len(batch))
    warn_long_prompts(records, benchmark.name)
    return records


def warn_long_prompts(records: Iterable[dict], what: str) -> None:
    """One warning for all the items recorded as unusable because their prompt exceeds the model's context."""
    long = [r for r in records if LONG_PROMPT in str(r.get("error") or "")]
    if long:
        shown = "; ".join(f"item {r['id']}: {r['error']}" for r in long[:3]) + ("; ..." if len(long) > 3 else "")
        warnings.warn(f"{what}: {len(long)} item(s) with a prompt {LONG_PROMPT} were recorded as unusable, not "
                      f"answered ({shown}).", FunctionalHeadsWarning, stacklevel=3)


def _answer_batch(backend: Backend, benchmark, batch, method, decoding: Decoding, judge=None) -> list[dict]:
    """Records of one batch, in its order. Questions without an image go to the backend as a text-only
    batch of their own (`images=None`); both parts draw from the batch's seed."""
    decoding = decoding.for_batch(batch[0].id)
    records, groups = {}, {True: ([], []), False: ([], [])}
    check = getattr(backend, "check_image", None)
    for example in batch:
        if isinstance(example, Unusable):
            records[example.id] = {"id": example.id, "error": example.reason, "score": None}
            continue
        try:
            image = example.load_image()
        except (OSError, ValueError) as err:  # UnusableImage (a ValueError) names the image
            records[example.id] = _unusable(example, str(err))
            continue
        if image is not None and check is not None:
            try:
                check(image, example.prompt)
            except UnusableImage as err:
                records[example.id] = _unusable(example, f"image {example.image_name}: {err}")
                continue
        groups[image is not None][0].append(example)
        groups[image is not None][1].append(image)
    for with_image, (ready, images) in groups.items():
        if ready:
            records.update((r["id"], r) for r in _scored_group(backend, benchmark, ready,
                                                                 images if with_image else None, method, decoding,
                                                                 judge))
    return [records[example.id] for example in batch]


LONG_PROMPT = "longer than the model's context"  # in the error of every record of such an item


def _unusable(example: Example, reason: str) -> dict:
    """The record of an item whose image cannot be used: recorded with its reason, naming the item and its row."""
    where = f" ({example.source})" if example.source else ""
    return {"id": example.id, "gold": example.gold, "error": f"item {example.id}{where}: {reason}", "score": None,
            "category": example.category}


def _scored_group(backend: Backend, benchmark, ready, images, method, decoding: Decoding, judge) -> list[dict]:
    """The backend's answers to examples that share a kind of prompt (all with an image, or none), timed
    per item, judged if asked, scored. A prompt longer than the model's context is recorded as unusable
    (answering it would read positions the model never learned) and the others are answered without it;
    non-finite logits stop the run, naming the items."""
    from ..models.loading import PromptTooLong  # here: the engine's names load without torch

    start = time.perf_counter()
    try:
        answers = backend.answer([e.prompt for e in ready], images, method, decoding)
    except PromptTooLong as err:
        if not err.rows:
            raise
        lengths = dict(zip(err.rows, err.lengths))
        records = [{"id": e.id, "gold": e.gold, "score": None, "category": e.category,
                    "error": f"prompt of {lengths[i]} tokens, {LONG_PROMPT} ({err.context} tokens)"}
                   for i, e in enumerate(ready) if i in lengths]
        rest = [i for i in range(len(ready)) if i not in lengths]
        if rest:
            records += _scored_group(backend, benchmark, [ready[i] for i in rest],
                                     None if images is None else [images[i] for i in rest], method, decoding, judge)
        return records
    except NonFiniteLogits as err:
        named = ready if err.rows is None else [ready[i] for i in err.rows]
        ids = ", ".join(str(e.id) for e in named[:5]) + (", ..." if len(named) > 5 else "")
        raise UserError(f"The model's logits are NaN or infinite for item(s) {ids} "
                        f"({'at the first step' if err.first_step else 'during generation'}): its answers would be "
                        "empty. Check the model with `fheads check --model PATH`, or try --dtype bfloat16 or "
                        "float32 (float16 overflows on some models).") from err
    seconds = (time.perf_counter() - start) / len(ready)
    records = []
    for example, answer in zip(ready, answers):
        text = answer.text
        judged = judge.judged(example.prompt, text) if judge is not None and not benchmark.truncated(text) else None
        scored = benchmark.score_output(example, judged or text)
        records.append({"id": example.id, "gold": example.gold, "prediction": text, "judged": judged,
                        "extracted": scored.extracted, "score": scored.score, "seconds": seconds, "error": None,
                        "category": example.category, "prompt": example.prompt,
                        "prompt_sha": prompt_hash(example.prompt), "failure": scored.failure,
                        "heads_rescaled": answer.heads_rescaled, "image": images is not None,
                        "info": example.info})
    return records
