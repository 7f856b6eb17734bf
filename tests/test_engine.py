"""The answering engine: batching, seeds, text-only prompts, scoring, through any backend."""

import json
from contextlib import contextmanager
from dataclasses import replace

import pytest

from functional_heads.evaluation.benchmarks import Example, get_benchmark
from functional_heads.evaluation.engine import (
    DEFAULT_MAX_NEW_TOKENS,
    Answer,
    Decoding,
    HFBackend,
    answer_all,
    answer_batches,
    length_sorted,
)
from functional_heads.evaluation.methods import get_method
from functional_heads.utils.errors import FunctionalHeadsWarning, UserError


class Recorder:
    """A backend that is not transformers: it answers each prompt with the gold answer of the shapes item,
    and notes what it was given."""

    name = "recorder"

    def __init__(self, answers: dict[str, str]):
        self.answers, self.calls = answers, []

    def answer(self, prompts, images, method, decoding):
        self.calls.append((list(prompts), images is None, method.name, decoding))
        return [Answer(self.answers[prompt], 0.25) for prompt in prompts]


def test_any_backend_answers_and_the_engine_scores_batches_in_order():
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:5]
    examples[1] = replace(examples[1], image=None)
    backend = Recorder({e.prompt: f"<think> x </think> <answer> {e.gold} </answer>" for e in examples})
    records = answer_all(backend, bench, examples, get_method("vanilla"), Decoding(max_new_tokens=7), batch_size=2)
    assert [r["id"] for r in records] == [e.id for e in examples]
    assert all(r["score"] == 1.0 and r["heads_rescaled"] == 0.25 and r["error"] is None for r in records)
    assert [r["image"] for r in records] == [True, False, True, True, True]
    # the first batch is asked as two: its question with an image, then the text-only one
    assert [(len(p), text_only) for p, text_only, _, _ in backend.calls] == \
        [(1, False), (1, True), (2, False), (1, False)]
    assert {d for *_, d in backend.calls} == {Decoding(max_new_tokens=7)}  # greedy: the settings as given


def test_a_sampled_batch_gets_a_seed_of_its_own_from_its_first_item():
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:4]
    backend = Recorder({e.prompt: "no" for e in examples})
    decoding = Decoding(max_new_tokens=4, sample=True, temperature=0.7, seed=3)
    for batch in answer_batches(backend, bench, examples, get_method("vanilla"), decoding, batch_size=2):
        pass
    seeds = [d.seed for *_, d in backend.calls]
    assert seeds == [decoding.for_batch(examples[0].id).seed, decoding.for_batch(examples[2].id).seed]
    assert len(set(seeds)) == 2 and all(d.temperature == 0.7 for *_, d in backend.calls)


def test_decoding_defaults_and_bad_settings():
    from typer.main import get_command

    from functional_heads.apps.cli import app

    assert Decoding().max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    options = {p.name: p.default for p in get_command(app).commands["eval"].params}
    assert options["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS  # the CLI's default is the engine's
    assert Decoding().identity() == {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "do_sample": False}
    with pytest.raises(UserError, match="max_new_tokens >= 1"):
        Decoding(max_new_tokens=0)
    with pytest.raises(UserError, match="order must be one of length, file"):
        next(answer_batches(Recorder({}), get_benchmark("shapes"), [], get_method("vanilla"), order="random"))


def test_sampled_runs_are_seeded_per_batch_and_leave_the_global_random_state_alone(bundled_vlm):
    import torch

    backend = HFBackend(*bundled_vlm)
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:4]
    decoding = Decoding(max_new_tokens=16, sample=True, temperature=1.5, seed=3)
    state = torch.random.get_rng_state()
    first = answer_all(backend, bench, examples, get_method("vanilla"), decoding, batch_size=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(12345)  # whatever the caller's state, the draws are the run's own
    again = answer_all(backend, bench, examples, get_method("vanilla"), decoding, batch_size=2)
    assert [r["prediction"] for r in first] == [r["prediction"] for r in again]


@pytest.mark.parametrize("method", ["vanilla", "static", "dynamic", "vcd", "pai"])
def test_questions_without_an_image_are_asked_as_text_only_prompts(bundled_vlm, method):
    """HallusionBench's leaderboard includes 178 questions without a figure. Static gains apply to them;
    dynamic has no S_v there and the contrastive baselines nothing to contrast: they decode plainly."""
    import torch

    from functional_heads.core.heads import identify_heads
    from functional_heads.evaluation.benchmarks import shapes_generator as shapes
    from functional_heads.testbed.bundled import bundled_settings

    backend = HFBackend(*bundled_vlm)
    item = next(iter(shapes.items("dev", n=1)))
    examples = [Example("with", item.scene.render(), item.question, "yes"),
                Example("without", None, item.question, "yes")]
    heads = identify_heads(torch.rand(8, 8), bundled_settings())
    records = answer_all(backend, get_benchmark("pope"), examples,
                         get_method(method, heads=heads, config=bundled_settings()), Decoding(max_new_tokens=8), 2)
    assert [r["id"] for r in records] == ["with", "without"] and all(r["error"] is None for r in records)
    assert [r["image"] for r in records] == [True, False]
    text_only = records[1]["heads_rescaled"]
    assert text_only == (float((heads.gains != 1).float().mean()) if method == "static" else 0.0)
    plain = answer_all(backend, get_benchmark("pope"), examples[1:], get_method("vanilla"),
                       Decoding(max_new_tokens=8), 2)
    if method != "static":
        assert records[1]["prediction"] == plain[0]["prediction"]


def test_length_sorted_batches_sort_each_window_and_read_ahead_only_that_far():
    pulled = []

    def stream():
        for i, length in enumerate([5, 1, 4, 2, 9, 3, 8, 7]):
            pulled.append(i)
            yield Example(str(i), None if i == 1 else "img", "x" * length, None)

    out = length_sorted(stream(), window=4)
    first = next(out)
    assert len(pulled) == 4 and first.id == "3"  # the window's shortest prompt with an image; no more read
    assert [e.id for e in [first, *out]] == ["3", "2", "0", "1", "5", "7", "6", "4"]  # text-only after images




@contextmanager
def poisoned(module, rows, from_call: int):
    """Within the block `module`'s output is NaN at `rows` from its `from_call`-th call (0: the prefill) on."""
    calls = []

    def hook(_, args, output):
        calls.append(1)
        if len(calls) > from_call:
            output = output.clone()
            output[rows] = float("nan")
            return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("sample", [False, True])
def test_nan_logits_from_the_first_step_stop_the_run_naming_the_items(bundled_vlm, sample):
    model, processor = bundled_vlm
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:6]
    decoding = Decoding(max_new_tokens=16, sample=sample)
    with poisoned(model.lm_head, slice(None), 0), \
            pytest.raises(UserError, match=r"logits are NaN or infinite for item\(s\) dev-000000, dev-000001, "
                                           r"dev-000002 \(at the first step\).*fheads check"):
        answer_all(HFBackend(model, processor), bench, examples, get_method("vanilla"), decoding, batch_size=3)
    assert not model._forward_hooks  # the check is gone with its batch


@pytest.mark.parametrize("sample", [False, True])
def test_nan_logits_later_in_generation_name_the_row_that_had_them(bundled_vlm, sample):
    """Greedy decoding runs on with NaN (argmax picks a token); sampling fails inside torch: both are named."""
    model, processor = bundled_vlm
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:3]
    decoding = Decoding(max_new_tokens=16, sample=sample)
    with poisoned(model.lm_head, 1, 3), \
            pytest.raises(UserError, match=r"for item\(s\) dev-000001 \(during generation\)"):
        answer_all(HFBackend(model, processor), bench, examples, get_method("vanilla"), decoding, batch_size=3)
    assert not model._forward_hooks


def test_prompts_longer_than_the_context_are_unusable_with_one_warning_and_the_rest_answered(bundled_vlm):
    """Shapes prompts hold 22 to 40 tokens with their image: with a context of 30, items 6 and 7 exceed it."""
    model, processor = bundled_vlm
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:8]
    text = model.config.get_text_config()
    context = text.max_position_embeddings
    text.max_position_embeddings = 30
    try:
        with pytest.warns(FunctionalHeadsWarning) as warned:
            records = answer_all(HFBackend(model, processor), bench, examples, get_method("vanilla"),
                                 Decoding(max_new_tokens=8), batch_size=4)
    finally:
        text.max_position_embeddings = context
    assert [r["id"] for r in records] == [e.id for e in examples]
    long = [r for r in records if r["error"]]
    assert [r["id"] for r in long] == ["dev-000006", "dev-000007"] and all(r["score"] is None for r in long)
    assert long[0]["error"] == "prompt of 35 tokens, longer than the model's context (30 tokens)"
    assert all(r["error"] is None and r["prediction"] for r in records[:6])  # 4 and 5 answered without them
    assert len(warned) == 1
    message = str(warned[0].message)
    assert message.startswith("shapes: 2 item(s) with a prompt longer than the model's context were recorded as "
                              "unusable") and "item dev-000006: prompt of 35 tokens" in message


def test_an_image_the_model_cannot_take_is_one_unusable_item_naming_it_not_a_failed_batch(bundled_vlm, tmp_path):
    """A 1x4000 PNG (beyond the processor's aspect-ratio limit) or a PNG whose header claims 20000x20000
    (Pillow's decompression-bomb guard) failed its whole batch, on every rerun, naming neither item nor file."""
    import io
    import zlib

    from PIL import Image

    from functional_heads.evaluation.benchmarks import shapes_generator as shapes

    data = shapes.write_split("dev", tmp_path, n=4)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    Image.new("RGB", (1, 4000), "white").save(tmp_path / rows[1]["image"])
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    bomb = bytearray(buffer.getvalue())
    bomb[16:24] = (20000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    (tmp_path / rows[2]["image"]).write_bytes(bytes(bomb))
    bench = get_benchmark("shapes")
    records = answer_all(HFBackend(*bundled_vlm), bench, list(bench.examples(data)), get_method("vanilla"),
                         Decoding(max_new_tokens=8), batch_size=4)
    assert [r["id"] for r in records] == [row["id"] for row in rows]
    assert records[0]["error"] is None and records[3]["error"] is None and records[3]["prediction"]
    for record, row, line, reason in [(records[1], rows[1], 2, "aspect ratio"), (records[2], rows[2], 3, "bomb")]:
        assert record["score"] is None and reason in record["error"], record["error"]
        assert record["error"].startswith(f"item {row['id']} ({data}:{line}): image {tmp_path / row['image']}")


def test_the_image_check_sets_aside_what_the_processor_refuses_and_raises_everything_else():
    from functional_heads.models.loading import check_image_input
    from functional_heads.utils.errors import MissingDependency, UnusableImage

    class Processor:
        def __init__(self, error):
            self.error = error

        def apply_chat_template(self, messages, add_generation_prompt):
            return "prompt"

        def __call__(self, **kwargs):
            raise self.error

    with pytest.raises(UnusableImage, match="processor refuses it .ValueError: too wide."):
        check_image_input(Processor(ValueError("too\nwide")), None, "q")
    for error in (MissingDependency("torchvision"), RuntimeError("CUDA out of memory")):
        with pytest.raises(type(error)):
            check_image_input(Processor(error), None, "q")
