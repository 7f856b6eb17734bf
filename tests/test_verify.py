"""`fheads verify`: class-masked heads against random heads of the same layers."""

import json

import pytest
import torch
import transformers
from PIL import Image
from typer.testing import CliRunner

from functional_heads.apps.cli import app
from functional_heads.core.config import RescaleConfig
from functional_heads.core.heads import HeadMap
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.engine import Decoding, HFBackend
from functional_heads.evaluation.stats import holm
from functional_heads.evaluation.verify import (
    Condition,
    Masked,
    analyse,
    conditions,
    distinct_controls,
    fixed_layers,
    random_controls,
    verify_heads,
    verify_markdown,
)
from functional_heads.models.loading import prompt_inputs
from functional_heads.testbed.bundled import REASONING_TUNED, bundled_model_path
from functional_heads.utils import plotting
from functional_heads.utils.errors import UserError

runner = CliRunner()
CONFIG = RescaleConfig(perc_last_layer=1, reas_first_layer=2, tau_perc=0.3, tau_reas=0.05)


def head_map(perception: dict, reasoning: dict, layers: int = 4, heads: int = 8) -> HeadMap:
    masks = [torch.zeros(layers, heads, dtype=torch.bool) for _ in range(2)]
    for mask, chosen in zip(masks, (perception, reasoning)):
        for layer, picked in chosen.items():
            mask[layer, picked] = True
    return HeadMap(*masks, CONFIG, "test")


def test_random_controls_draw_as_many_heads_per_layer_from_the_heads_outside_the_map():
    heads = head_map({0: [1, 2], 1: [5]}, {2: [0], 3: [3, 4, 6]})
    selected = heads.perception | heads.reasoning
    for kind, own in (("perception", heads.perception), ("reasoning", heads.reasoning)):
        draws = random_controls(heads, kind, 6, seed=0)
        assert len(draws) == 6
        for mask in draws:
            assert mask.sum(-1).tolist() == own.sum(-1).tolist()  # the same layers, as many heads in each
            assert not (mask & selected).any()  # never a head of the class, nor of the other class
        assert len({tuple(m.flatten().tolist()) for m in draws}) > 1  # the draws differ
        again = random_controls(heads, kind, 6, seed=0)
        assert all(torch.equal(a, b) for a, b in zip(draws, again))  # seeded
        other = random_controls(heads, kind, 6, seed=1)
        assert any(not torch.equal(a, b) for a, b in zip(draws, other))
    perception, reasoning = random_controls(heads, "perception", 1)[0], random_controls(heads, "reasoning", 1)[0]
    assert perception[2:].sum() == 0 and reasoning[:2].sum() == 0


def test_draws_differ_while_different_controls_remain():
    heads = head_map({}, {3: [5]})  # one reasoning head: 7 others to pick from in its layer
    assert distinct_controls(heads, "reasoning") == 7
    seven = random_controls(heads, "reasoning", 7, seed=2)
    assert len({tuple(m.nonzero().flatten().tolist()) for m in seven}) == 7
    nine = random_controls(heads, "reasoning", 9, seed=2)
    assert len({tuple(m.nonzero().flatten().tolist()) for m in nine}) == 7 and len(nine) == 9
    assert distinct_controls(head_map({0: [1, 2], 1: [5]}, {}), "perception") == 15 * 7


def test_a_layer_without_room_for_a_control_is_refused_and_a_full_one_noted():
    crowded = head_map({0: [0, 1, 2, 3, 4], 1: [0]}, {}, heads=8)
    with pytest.raises(UserError, match="layer 0 has 5 perception heads but only 3 heads outside the map"):
        random_controls(crowded, "perception", 3)
    with pytest.raises(UserError, match="layer 0"):
        conditions(crowded)
    half = head_map({0: [0, 1, 2, 3]}, {3: [0]}, heads=8)
    assert fixed_layers(half, "perception") == [0] and fixed_layers(half, "reasoning") == []
    assert all(torch.equal(m[0], ~half.perception[0]) for m in random_controls(half, "perception", 3))
    with pytest.raises(UserError, match="at least 1"):
        random_controls(half, "perception", 0)


def test_conditions_mask_each_class_and_skip_a_class_without_heads():
    heads = head_map({0: [1], 1: [2]}, {})
    plan = conditions(heads, draws=2, seed=3)
    assert [c.name for c in plan] == ["vanilla", "mask-perception", "mask-perception-random1",
                                      "mask-perception-random2"]
    assert plan[0].mask is None and torch.equal(plan[1].mask, heads.perception)
    assert [c.draw for c in plan] == [None, None, 1, 2]
    assert Masked("m", plan[1].mask).identity() == {"method": "m", "masked_heads": [[0, 1], [1, 2]]}


def synthetic(outcomes: dict[str, list[str | None]]) -> dict:
    """Records per condition from a failure label (or None: right) per item."""
    return {name: {f"i{k}": {"id": f"i{k}", "score": float(label is None), "failure": label, "error": None}
                   for k, label in enumerate(labels)} for name, labels in outcomes.items()}


def plan_of(draws: int = 2) -> list[Condition]:
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[0, 0] = True
    plan = [Condition("vanilla", "vanilla")]
    for kind in ("perception", "reasoning"):
        plan.append(Condition(f"mask-{kind}", "class", kind, mask=mask))
        plan += [Condition(f"mask-{kind}-random{k}", "random", kind, k, mask) for k in range(1, draws + 1)]
    return plan


def test_analyse_tests_one_family_with_holm_and_words_the_verdicts():
    n = 200
    right = [None] * n
    records = synthetic({
        "vanilla": right,
        "mask-perception": ["perceptual"] * 60 + [None] * (n - 60),
        "mask-perception-random1": ["perceptual"] * 4 + [None] * (n - 4),
        "mask-perception-random2": [None] * 4 + ["drift"] * 2 + [None] * (n - 6),
        "mask-reasoning": right, "mask-reasoning-random1": right, "mask-reasoning-random2": right})
    result = analyse(records, plan_of(), get_benchmark("shapes"))
    assert result["outcomes"] == ["accuracy", "perceptual", "location", "drift", "malformed"]
    assert result["family"]["tests"] == 2 * 2 * 5  # per class and outcome: against vanilla, against random
    tests = [result["conditions"][f"mask-{c}"]["vs_vanilla"][o]["mcnemar"] for c in ("perception", "reasoning")
             for o in result["outcomes"]] + [result["classes"][c]["contrast"][o] for c in ("perception", "reasoning")
                                             for o in result["outcomes"]]
    assert [t["p_holm"] for t in tests] == pytest.approx(holm([t["p"] for t in tests]))
    perception = result["classes"]["perception"]
    assert perception["status"] == "functional" and perception["signature"] == "perceptual"
    assert perception["contrast"]["perceptual"]["mean"] == pytest.approx(0.3 - 0.01)
    assert perception["contrast"]["perceptual"]["per_draw"] == pytest.approx([0.28, 0.3])
    assert result["conditions"]["mask-perception-random2"]["rates"]["drift"] == pytest.approx(0.01)
    assert "raises perceptual errors by 29.0 points" in perception["verdict"]
    assert "every draw" not in perception["verdict"]  # it holds against each draw alone
    assert "more than masking as many random heads from the same layers" in perception["verdict"]
    reasoning = result["classes"]["reasoning"]
    assert reasoning["status"] == "not distinguishable" and "changes no item's reasoning drift" in reasoning["verdict"]
    assert f"At {n} items this contrast detects a difference of about" in reasoning["power"]
    text = verify_markdown({**result, "draws": 2, "seed": 0})
    assert "Tests: 20 in one family" in text and "| perception | perceptual (signature) | +29.0" in text


def test_a_contrast_that_one_draw_carries_is_said_to_be_so():
    n = 200
    records = synthetic({"vanilla": [None] * n, "mask-perception": ["perceptual"] * 30 + [None] * (n - 30),
                         "mask-perception-random1": ["perceptual"] * 40 + [None] * (n - 40),  # worse than the class
                         "mask-perception-random2": [None] * n,
                         "mask-reasoning": [None] * n, **{f"mask-reasoning-random{k}": [None] * n for k in (1, 2)}})
    entry = analyse(records, plan_of(), get_benchmark("shapes"))["classes"]["perception"]
    assert entry["contrast"]["perceptual"]["per_draw"] == pytest.approx([-0.05, 0.15])
    assert entry["status"] == "functional"
    assert "does not hold against every draw alone (-5.0, +15.0 points)" in entry["verdict"]


def test_holm_keeps_a_raw_p_below_alpha_from_making_a_verdict():
    n = 200
    records = synthetic({"vanilla": [None] * n, "mask-perception": ["perceptual"] * 4 + [None] * (n - 4),
                         **{f"mask-perception-random{k}": [None] * n for k in (1, 2)},
                         "mask-reasoning": [None] * n, **{f"mask-reasoning-random{k}": [None] * n for k in (1, 2)}})
    contrast = analyse(records, plan_of(), get_benchmark("shapes"))["classes"]["perception"]
    test = contrast["contrast"]["perceptual"]
    assert test["p"] < 0.05 <= test["p_holm"]
    assert contrast["status"] == "not distinguishable"


def test_a_benchmark_without_failure_labels_is_judged_on_accuracy_and_a_contrary_class_named():
    n = 100
    records = synthetic({"vanilla": ["x"] * 50 + [None] * 50, "mask-perception": [None] * n,
                         **{f"mask-perception-random{k}": ["x"] * 50 + [None] * 50 for k in (1, 2)},
                         "mask-reasoning": ["x"] * 90 + [None] * 10,
                         **{f"mask-reasoning-random{k}": ["x"] * 50 + [None] * 50 for k in (1, 2)}})
    result = analyse(records, plan_of(), get_benchmark("pope"))
    assert result["outcomes"] == ["accuracy"] and result["family"]["tests"] == 4
    assert result["classes"]["perception"]["status"] == "contrary"
    assert "raises accuracy by 50.0 points" in result["classes"]["perception"]["verdict"]
    assert result["classes"]["reasoning"]["status"] == "functional"
    assert "lowers accuracy by 40.0 points" in result["classes"]["reasoning"]["verdict"]


def test_masking_changes_the_answers_and_leaves_the_model_as_it_was(bundled_vlm):
    model, processor = bundled_vlm
    examples = list(get_benchmark("shapes").examples(None, "dev"))[:4]
    images, prompts = [e.load_image() for e in examples], [e.prompt for e in examples]
    kwargs = dict(max_new_tokens=8, do_sample=False)
    vanilla = model.generate(**prompt_inputs(processor, images, prompts), **kwargs)
    early = torch.zeros(8, 8, dtype=torch.bool)
    early[:3] = True  # every head of the first three layers: the image is never read
    silenced = Masked("early", early).generate(model, processor, images, prompts, **kwargs)
    assert silenced.heads_rescaled == [3 / 8] * 4
    assert not torch.equal(silenced.tokens, vanilla)
    assert torch.equal(model.generate(**prompt_inputs(processor, images, prompts), **kwargs), vanilla)


def test_verify_heads_in_memory_on_a_loaded_model(bundled_vlm):
    heads = head_map({0: [1], 2: [3]}, {7: [0]}, layers=8, heads=8)
    bench = get_benchmark("shapes")
    examples = list(bench.examples(None, "dev"))[:3]
    result = verify_heads(bundled_vlm, heads, bench, examples, Decoding(max_new_tokens=6), random_draws=1,
                          batch_size=3)
    assert result["items"] == 3 and len(result["conditions"]) == 5
    assert result["heads"]["perception"]["per_layer"] == {0: 1, 2: 1}
    with pytest.raises(UserError, match="only for a model given as its folder"):
        verify_heads(HFBackend(*bundled_vlm), heads, bench, examples, runs="runs")
    with pytest.raises(UserError, match="greedy"):
        verify_heads(bundled_vlm, heads, bench, examples, Decoding(sample=True))
    with pytest.raises(UserError, match="8 layers x 8 heads"):
        verify_heads(bundled_vlm, head_map({0: [1]}, {}, layers=4), bench, examples)


def test_cli_on_the_bundled_model_with_a_calibrated_map_and_a_resumed_rerun(tmp_path):
    model = bundled_model_path(REASONING_TUNED)
    data = tmp_path / "data"
    assert runner.invoke(app, ["data", "shapes", "--out", str(data), "--split", "calib", "--n", "8"]).exit_code == 0
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--data", str(data / "calib.jsonl"),
                                 "--settings", str(model / "candidate.json"), "--out", str(tmp_path / "heads.json")])
    assert result.exit_code == 0, result.output
    args = ["verify", "--model", str(model), "--heads", str(tmp_path / "heads.json"), "--bench", "shapes", "--split",
            "dev", "--limit", "4", "--draws", "2", "--max-new-tokens", "8", "--batch-size", "4", "--out",
            str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    report = json.loads((out / "verify.json").read_text())
    heads = HeadMap.load(tmp_path / "heads.json")
    classes = [c for c in ("perception", "reasoning") if getattr(heads, c).any()]
    assert report["items"] == 4 and report["split"] == "dev" and len(report["conditions"]) == 1 + 3 * len(classes)
    assert report["outcomes"] == ["accuracy", "perceptual", "location", "drift", "malformed"]
    assert report["family"]["tests"] == 2 * 5 * len(classes)
    assert "## Verdicts" in (out / "verify.md").read_text() and "## Verdicts" in result.output
    assert (out / "verify.png").is_file() == plotting.available()  # the figure needs the plot extra
    assert "condition 1/" in (out / "log.txt").read_text()
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == len(report["conditions"])
    written = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.jsonl")}
    again = runner.invoke(app, args)  # every condition done: nothing is answered again
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.jsonl")} == written
    assert json.loads((out / "verify.json").read_text())["classes"] == report["classes"]
    crowded = head_map({0: [0, 1, 2, 3, 4]}, {}, layers=8, heads=8)
    crowded.save(tmp_path / "crowded.json")
    failed = runner.invoke(app, [*args[:3], "--heads", str(tmp_path / "crowded.json"), *args[5:]])
    assert failed.exit_code == 2 and "layer 0 has 5 perception heads" in failed.output


def pope_data(folder):
    folder.mkdir()
    rows = []
    for k, (colour, answer) in enumerate([((200, 30, 30), "yes"), ((30, 30, 200), "no"), ((30, 200, 30), "no")]):
        Image.new("RGB", (24, 24), colour).save(folder / f"{k}.png")
        rows.append({"question_id": k, "image": f"{k}.png", "question": "is there a red circle in the image ?",
                     "answer": answer, "category": "random"})
    (folder / "pope.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "pope.jsonl"


def save_llava(folder):
    from functional_heads.testbed.tiny_models import save_tiny_llava

    return save_tiny_llava(folder)


def save_kimi_vl(folder):
    from functional_heads.testbed.tiny_models import save_tiny_kimi_vl

    return save_tiny_kimi_vl(folder)[0]


@pytest.mark.parametrize("family, save, layers", [
    ("llava", save_llava, 4),
    pytest.param("kimi_vl", save_kimi_vl, 2, marks=pytest.mark.skipif(
        not hasattr(transformers, "Kimi_K25Config"), reason="needs the native Kimi-K2.5 classes"))])
def test_cli_on_tiny_models_of_other_families_judges_accuracy_only(family, save, layers, tmp_path):
    model = save(tmp_path / family)
    heads = head_map({0: [1]}, {layers - 1: [2]}, layers=layers, heads=4)
    heads.model_type = family
    heads.save(tmp_path / "heads.json")
    result = runner.invoke(app, ["verify", "--model", str(model), "--heads", str(tmp_path / "heads.json"), "--bench",
                                 "pope", "--data", str(pope_data(tmp_path / "pope")), "--draws", "2",
                                 "--max-new-tokens", "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "verify.json").read_text())
    assert report["outcomes"] == ["accuracy"] and report["items"] == 3 and report["family"]["tests"] == 4
    assert {c: e["signature"] for c, e in report["classes"].items()} == {"perception": "accuracy",
                                                                         "reasoning": "accuracy"}
    assert all(e["status"] in ("functional", "contrary", "not distinguishable") for e in report["classes"].values())
