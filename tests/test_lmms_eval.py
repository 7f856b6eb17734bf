"""The lmms-eval wrapper; runs only where lmms-eval is installed (an optional extra, kept out of CI)."""

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from functional_heads.evaluation.benchmarks import get_benchmark  # noqa: E402
from functional_heads.evaluation.benchmarks import shapes_generator as shapes  # noqa: E402
from functional_heads.evaluation.methods import get_method  # noqa: E402
from functional_heads.evaluation.runs import Decoding, answer_all  # noqa: E402
from functional_heads.models.loading import load_model, load_processor  # noqa: E402
from functional_heads.testbed.bundled import bundled_model_path  # noqa: E402


def test_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    from functional_heads.integrations.lmms_eval import FunctionalHeads

    assert get_model("functional_heads") is FunctionalHeads


def test_generate_until_answers_like_fheads():
    from lmms_eval.api.instance import Instance

    from functional_heads.integrations.lmms_eval import FunctionalHeads

    items = list(shapes.items("dev", n=4))
    model = FunctionalHeads(pretrained=str(bundled_model_path()), method="vanilla")
    model.task_dict = {"shapes": {"dev": {i: {"image": it.scene.render()} for i, it in enumerate(items)}}}
    requests = [Instance("generate_until", (it.question, {"max_new_tokens": 64, "until": ["<|im_end|>"]},
                                             lambda doc: [doc["image"]], i, "shapes", "dev"),
                         idx=0, metadata={"task": "shapes", "doc_id": i, "repeats": 1}) for i, it in enumerate(items)]
    got = model.generate_until(requests)
    path = bundled_model_path()
    bench = get_benchmark("shapes")
    records = answer_all(load_model(path), load_processor(path), bench, list(bench.examples(None, "dev"))[:4],
                         get_method("vanilla"), Decoding(max_new_tokens=64), batch_size=1)
    assert got == [r["prediction"] for r in records]  # what `fheads eval` records
    with pytest.raises(NotImplementedError):
        model.loglikelihood(requests)


def test_model_args_beyond_the_wrapper_s_own_are_baseline_settings():
    from functional_heads.integrations.lmms_eval import FunctionalHeads

    model = FunctionalHeads(pretrained=str(bundled_model_path()), method="vcd", alpha="0.5", noise_step=300)
    assert model.method.settings.alpha == 0.5 and model.method.settings.noise_step == 300
    with pytest.raises(ValueError, match="vcd has no setting gamma"):
        FunctionalHeads(pretrained=str(bundled_model_path()), method="vcd", gamma=2)
    with pytest.raises(ValueError, match="takes none"):
        FunctionalHeads(pretrained=str(bundled_model_path()), method="vanilla", alpha=1)
