"""The lmms-eval wrapper. Without lmms-eval (an optional extra, kept out of CI) its base class is stood in
for, so the wrapper's own logic (batching, decoding settings, stop strings) is tested everywhere."""

import sys
import types

import pytest

from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.engine import DEFAULT_MAX_NEW_TOKENS, Decoding, HFBackend, answer_all
from functional_heads.evaluation.methods import get_method
from functional_heads.testbed.bundled import bundled_model_path

try:
    import lmms_eval  # noqa: F401
    INSTALLED = True
except ImportError:
    INSTALLED = False
needs_lmms_eval = pytest.mark.skipif(not INSTALLED, reason="lmms-eval is not installed")


@pytest.fixture
def wrapper(monkeypatch):
    """The wrapper module, on lmms-eval's base class or a stand-in for it."""
    if not INSTALLED:
        class Lmms:
            def __init__(self):
                self.cache_hook = types.SimpleNamespace(add_partial=lambda *args: None)

        for name in ("lmms_eval", "lmms_eval.api"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, "lmms_eval.api.model", types.SimpleNamespace(lmms=Lmms))
        monkeypatch.delitem(sys.modules, "functional_heads.integrations.lmms_eval", raising=False)
    import functional_heads.integrations.lmms_eval as module

    yield module
    if not INSTALLED:
        sys.modules.pop("functional_heads.integrations.lmms_eval", None)


class Request:
    def __init__(self, args):
        self.args = args


def requests_for(items, gen_kwargs):
    return [Request((it.question, dict(gen_kwargs[i % len(gen_kwargs)]), lambda doc: [doc["image"]], i, "shapes",
                     "dev")) for i, it in enumerate(items)]


@needs_lmms_eval
def test_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    from functional_heads.integrations.lmms_eval import FunctionalHeads

    assert get_model("functional_heads") is FunctionalHeads


@pytest.mark.parametrize("batch_size", [1, 2])
def test_generate_until_answers_like_fheads(wrapper, batch_size):
    items = list(shapes.items("dev", n=4))
    model = wrapper.FunctionalHeads(pretrained=str(bundled_model_path()), method="vanilla", batch_size=batch_size)
    model.task_dict = {"shapes": {"dev": {i: {"image": it.scene.render()} for i, it in enumerate(items)}}}
    got = model.generate_until(requests_for(items, [{"max_new_tokens": 64, "until": ["<|im_end|>"]}]))
    bench = get_benchmark("shapes")
    records = answer_all(model.backend, bench, list(bench.examples(None, "dev"))[:4], get_method("vanilla"),
                         Decoding(max_new_tokens=64), batch_size=batch_size)
    assert got == [r["prediction"] for r in records]  # what `fheads eval` records
    with pytest.raises(NotImplementedError):
        model.loglikelihood([])


def test_a_prompt_longer_than_the_context_gets_an_empty_answer_and_the_rest_are_answered(wrapper):
    from functional_heads.utils.errors import FunctionalHeadsWarning

    items = list(shapes.items("dev", n=4))
    model = wrapper.FunctionalHeads(pretrained=str(bundled_model_path()), method="vanilla", batch_size=4)
    model.task_dict = {"shapes": {"dev": {i: {"image": it.scene.render()} for i, it in enumerate(items)}}}
    requests = requests_for(items, [{"max_new_tokens": 64, "until": ["<|im_end|>"]}])
    whole = model.generate_until(requests)
    requests[2].args = (" ".join(["how many"] * 600),) + requests[2].args[1:]  # past 1024 positions
    with pytest.warns(FunctionalHeadsWarning, match="1 prompt"):
        got = model.generate_until(requests)
    assert got[2] == "" and [got[i] for i in (0, 1, 3)] == [whole[i] for i in (0, 1, 3)]


def test_requests_with_other_generation_arguments_are_not_batched_together(wrapper, monkeypatch):
    items = list(shapes.items("dev", n=4))
    model = wrapper.FunctionalHeads(pretrained=str(bundled_model_path()), method="vanilla", batch_size=4)
    model.task_dict = {"shapes": {"dev": {i: {"image": it.scene.render()} for i, it in enumerate(items)}}}
    calls = []
    answer = HFBackend.answer
    monkeypatch.setattr(HFBackend, "answer", lambda self, prompts, images, method, decoding:
                        calls.append((len(prompts), decoding)) or answer(self, prompts, images, method, decoding))
    got = model.generate_until(requests_for(items, [{"max_new_tokens": 16, "until": ["</think>"]},
                                                    {"max_new_tokens": 16, "until": ["</think>"]},
                                                    {"temperature": 0.5, "until": []}, {"temperature": 0.5}]))
    assert [n for n, _ in calls] == [2, 1, 1]
    assert calls[0][1] == Decoding(max_new_tokens=16)
    sampled = calls[1][1]
    assert sampled.sample and sampled.temperature == 0.5 and sampled.max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    assert all("</think>" not in text for text in got[:2])


def test_model_args_beyond_the_wrapper_s_own_are_baseline_settings(wrapper):
    model = wrapper.FunctionalHeads(pretrained=str(bundled_model_path()), method="vcd", alpha="0.5", noise_step=300)
    assert model.method.settings.alpha == 0.5 and model.method.settings.noise_step == 300
    with pytest.raises(ValueError, match="vcd has no setting gamma"):
        wrapper.FunctionalHeads(pretrained=str(bundled_model_path()), method="vcd", gamma=2)
    with pytest.raises(ValueError, match="takes none"):
        wrapper.FunctionalHeads(pretrained=str(bundled_model_path()), method="vanilla", alpha=1)
