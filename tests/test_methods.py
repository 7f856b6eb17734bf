"""The method registry: built-in methods, and a method registered from outside the package working in
`fheads eval`, the demo and `fheads report` (and, through an entry point, in a fresh process)."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from functional_heads.apps.cli import app
from functional_heads.apps.demo import run_demo
from functional_heads.evaluation import Method, get_method, register_method
from functional_heads.evaluation.methods import METHODS
from functional_heads.evaluation.report import build_report
from functional_heads.testbed.bundled import bundled_model_path


@register_method
class ScaledLogits(Method):
    """A toy method from outside the package: greedy, but with the logits of every step scaled by `scale`
    (a no-op for greedy decoding, so its answers must equal vanilla's)."""

    name = "toy-scaled"

    def decode(self, model, processor, inputs, images, prompts, **generate_kwargs):
        from transformers import LogitsProcessor

        class Scale(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return scores * 2.0

        return model.generate(**inputs, logits_processor=[Scale()], **generate_kwargs)


def test_builtin_methods_are_registered_in_order():
    assert list(METHODS)[:9] == ["vanilla", "static", "dynamic", "perception-only", "reasoning-only", "vcd", "pai",
                                 "agla", "cgd"]
    with pytest.raises(ValueError, match="Unknown method 'beam'"):
        get_method("beam")
    with pytest.raises(TypeError, match="Method subclass"):
        register_method(dict)


@pytest.mark.slow
def test_a_registered_method_works_in_eval_demo_and_report(tmp_path):
    args = ["eval", "--model", str(bundled_model_path()), "--bench", "shapes", "--limit", "8", "--batch-size", "4",
            "--max-new-tokens", "64", "--out", str(tmp_path / "runs")]
    for method in ("vanilla", "toy-scaled"):
        result = CliRunner().invoke(app, args + ["--method", method])
        assert result.exit_code == 0, result.output
    report = build_report(tmp_path / "runs")["shapes"]
    assert list(report["methods"]) == ["vanilla", "toy-scaled"]
    toy = report["methods"]["toy-scaled"]
    assert toy["mcnemar_vs_vanilla"]["a_only"] == toy["mcnemar_vs_vanilla"]["b_only"] == 0  # greedy: same answers
    demo = run_demo(limit=8, methods=("vanilla", "toy-scaled"))["shapes"]["methods"]
    assert demo["toy-scaled"]["accuracy"] == demo["vanilla"]["accuracy"] == report["methods"]["vanilla"]["accuracy"]


@pytest.mark.slow
def test_a_method_from_an_installed_package_is_found_through_its_entry_point(tmp_path, installed_plugin):
    plugin = installed_plugin("toy_plugin", '''
        from functional_heads.evaluation import Method

        class Shout(Method):
            name = "toy-plugin"
    ''', "functional_heads.methods", "toy-plugin", "Shout")
    command = [sys.executable, "-m", "functional_heads.apps.cli", "eval", "--model", str(bundled_model_path()),
               "--bench", "shapes", "--method", "toy-plugin", "--limit", "4", "--max-new-tokens", "64",
               "--out", str(tmp_path / "runs")]
    result = subprocess.run(command, capture_output=True, text=True, env={**__import__("os").environ,
                                                                          "PYTHONPATH": str(plugin)})
    assert result.returncode == 0, result.stderr
    run, = (tmp_path / "runs").iterdir()
    assert run.name.startswith("shapes-toy-plugin-")
    assert json.loads((run / "run.json").read_text())["settings"]["method"] == "toy-plugin"


def test_generation_leaves_grad_mode_and_random_state_alone(bundled_vlm):
    model, processor = bundled_vlm
    from functional_heads.evaluation.benchmarks import shapes_generator as shapes

    items = list(shapes.items("dev", n=2))
    state = torch.random.get_rng_state()
    grad = torch.is_grad_enabled()
    get_method("vanilla").generate(model, processor, [it.scene.render() for it in items],
                                   [it.question for it in items], max_new_tokens=8, do_sample=False)
    assert torch.is_grad_enabled() == grad and torch.equal(torch.random.get_rng_state(), state)
