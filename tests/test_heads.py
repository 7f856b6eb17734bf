import contextlib
import io
import json
import warnings

import pytest
import torch

import functional_heads as fh
from functional_heads.core.heads import dose_matched, thresholds_for_shares

CFG = fh.RescaleConfig(perc_last_layer=1, reas_first_layer=2, tau_perc=0.5, tau_reas=0.1, g_perc=1.2, g_reas=1.4)


def hand_ratios():
    return torch.tensor([[0.6, 0.4, 0.05, 0.5],   # layer 0: heads 0, 3 perception (>= 0.5); 0.05 is too shallow
                         [0.2, 0.9, 0.5, 0.49],   # layer 1: heads 1, 2 perception
                         [0.7, 0.1, 0.11, 0.0],   # layer 2: heads 1, 3 reasoning (<= 0.1); 0.7 is too deep
                         [0.05, 0.3, 0.02, 0.8]])  # layer 3: heads 0, 2 reasoning


def test_rules_of_the_paper_on_hand_made_ratios():
    heads = fh.identify_heads(hand_ratios(), CFG, "qwen2_5_vl")
    assert heads.perception.nonzero().tolist() == [[0, 0], [0, 3], [1, 1], [1, 2]]
    assert heads.reasoning.nonzero().tolist() == [[2, 1], [2, 3], [3, 0], [3, 2]]
    gains = heads.gains
    assert gains[0, 0] == pytest.approx(1.2) and gains[2, 1] == pytest.approx(1.4) and gains[0, 1] == 1.0
    assert heads.share_selected == 0.5
    assert heads.per_layer_counts() == [(2, 0), (2, 0), (0, 2), (0, 2)]


def test_overlapping_bands_keep_classes_disjoint():
    cfg = fh.RescaleConfig(perc_last_layer=3, reas_first_layer=0, tau_perc=0.5, tau_reas=0.1)
    heads = fh.identify_heads(hand_ratios(), cfg)
    assert not (heads.perception & heads.reasoning).any()
    assert int(heads.perception.sum()) == 6 and int(heads.reasoning.sum()) == 5


def test_per_input_ratios_give_per_input_maps():
    ratios = torch.stack([hand_ratios(), 1 - hand_ratios()])
    heads = fh.identify_heads(ratios, CFG)
    assert heads.perception.shape == (2, 4, 4)
    assert torch.equal(heads.perception[0], fh.identify_heads(hand_ratios(), CFG).perception)
    with pytest.raises(ValueError, match="static head map"):
        heads.save("x.json")


def test_layer_bound_outside_the_ratios():
    with pytest.raises(ValueError, match="reas_first_layer=5 is outside the model"):
        fh.identify_heads(hand_ratios(), fh.RescaleConfig(1, 5, 0.5, 0.1))


def test_save_and_load_round_trip(tmp_path):
    heads = fh.identify_heads(hand_ratios(), CFG, "qwen2_5_vl")
    heads.num_samples = 12
    heads.save(tmp_path / "heads.json")
    loaded = fh.HeadMap.load(tmp_path / "heads.json")
    assert torch.equal(loaded.perception, heads.perception) and torch.equal(loaded.reasoning, heads.reasoning)
    assert loaded.config == CFG and loaded.model_type == "qwen2_5_vl" and loaded.num_samples == 12
    torch.testing.assert_close(loaded.ratios, hand_ratios())
    data = json.loads((tmp_path / "heads.json").read_text())
    assert data["perception_heads"] == [[0, 0], [0, 3], [1, 1], [1, 2]]


def test_loading_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"num_layers": 2}')
    with pytest.raises(ValueError, match="not a readable functional-heads head map"):
        fh.HeadMap.load(tmp_path / "bad.json")


def test_map_of_another_shape_is_refused(tiny, tmp_path):
    heads = fh.identify_heads(torch.rand(6, 4), fh.RescaleConfig(1, 2, 0.5, 0.1, 1.2, 1.2), "qwen2_5_vl")
    heads.save(tmp_path / "heads.json")
    model = tiny("qwen2_5_vl").model
    with pytest.raises(ValueError, match="made for a model of 6 layers x 4 heads .* has 4 layers x 4 heads"):
        with fh.rescale(model, fh.HeadMap.load(tmp_path / "heads.json")):
            pass
    with pytest.raises(ValueError, match="made for a model of 6 layers"):
        fh.fold(model, heads)


def test_calibrate_averages_ratios_over_batches(tiny):
    t = tiny("llava")
    batches = [t.inputs(prompt_lens=(5, 9)), t.inputs(prompt_lens=(7,), samples=[2])]
    ratios = torch.cat([fh.visual_attention_ratios(t.model, b) for b in batches])
    cfg = fh.RescaleConfig(1, 2, tau_perc=float(ratios.mean().item()), tau_reas=0.0)
    heads = fh.calibrate(t.model, iter(batches), cfg)
    torch.testing.assert_close(heads.ratios, ratios.mean(0))
    assert heads.num_samples == 3 and heads.model_type == "llava"
    assert torch.equal(heads.perception, fh.identify_heads(ratios.mean(0), cfg).perception)
    with pytest.raises(ValueError, match="no calibration batches"):
        fh.calibrate(t.model, [], cfg)


def test_thresholds_for_shares_select_that_many_heads_inside_each_band():
    ratios = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    tau_perc, tau_reas = thresholds_for_shares(ratios, 2, 4, perc_share=0.125, reas_share=0.0625)
    heads = fh.identify_heads(ratios, fh.RescaleConfig(2, 4, tau_perc, tau_reas))
    assert int(heads.perception.sum()) == 6 and int(heads.reasoning.sum()) == 3
    assert ratios[heads.perception].min() >= ratios[:3][~heads.perception[:3]].max()
    assert ratios[heads.reasoning].max() <= ratios[4:][~heads.reasoning[4:]].min()
    assert thresholds_for_shares(ratios, 2, 4, 0.0, 0.0) == (1.0, 0.0)  # a share of 0: none


def test_dose_matched_selects_the_same_share_on_another_model():
    source = hand_ratios()  # CFG selects 4 perception and 4 reasoning heads of 16
    target = source * 0.3 + 0.2  # another model: absolute thresholds select 0 perception, 0 reasoning heads
    assert int(fh.identify_heads(target, CFG).perception.sum()) == 0
    matched = dose_matched(CFG, source, target)
    heads = fh.identify_heads(target, matched)
    assert int(heads.perception.sum()) == 4 and int(heads.reasoning.sum()) == 4
    assert (matched.perc_last_layer, matched.g_perc, matched.g_reas) == (1, 1.2, 1.4)  # bands and gains kept
    with pytest.raises(ValueError, match="one shape"):  # a UserError
        dose_matched(CFG, source, target[:3])


def test_layer_gains_replace_class_gains_and_only_keeps_one_class():
    cfg = fh.RescaleConfig(1, 2, 0.5, 0.1, layer_gains=(1.1, 1.2, 1.3, 1.4))
    heads = fh.identify_heads(hand_ratios(), cfg)
    assert heads.gains[0, 0] == pytest.approx(1.1) and heads.gains[1, 1] == pytest.approx(1.2)
    assert heads.gains[3, 0] == pytest.approx(1.4) and heads.gains[0, 1] == 1.0
    perception = heads.only("perception")
    assert not perception.reasoning.any() and torch.equal(perception.perception, heads.perception)
    assert (perception.gains[2:] == 1).all()
    with pytest.raises(ValueError, match="4 gains; the model has 3 layers"):
        fh.identify_heads(hand_ratios()[:3], cfg)


def _map_file(tmp_path, edit):
    heads = fh.identify_heads(hand_ratios(), CFG, "qwen2_5_vl")
    heads.save(tmp_path / "heads.json")
    data = json.loads((tmp_path / "heads.json").read_text())
    edit(data)
    (tmp_path / "edited.json").write_text(json.dumps(data))
    return tmp_path / "edited.json"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["reasoning_heads"].append([0, 0]), "head 0 of layer 0 is listed as both a perception and a reasoning"),
    (lambda d: d["config"].update(layer_gains=[1.2, 1.2, 1.2]), "layer_gains holds 3 gains but the map has 4 layers"),
    (lambda d: d["config"].update(g_perc=1e30), r"g_perc=1e\+30 is invalid: it must lie in \[0.1, 10\]"),
    (lambda d: d["config"].update(g_reas=-2), "g_reas=-2 is invalid: it must be a finite number > 0"),
])
def test_invalid_head_maps_are_refused_naming_the_file(tmp_path, edit, message):
    path = _map_file(tmp_path, edit)
    with pytest.raises(ValueError, match=f"{path} is not a readable functional-heads head map: {message}"):
        fh.HeadMap.load(path)


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "-Infinity"])
def test_head_map_files_with_non_numbers_are_refused(tmp_path, literal):
    heads = fh.identify_heads(hand_ratios(), CFG)
    heads.save(tmp_path / "heads.json")
    text = (tmp_path / "heads.json").read_text().replace('"g_perc": 1.2', f'"g_perc": {literal}')
    (tmp_path / "heads.json").write_text(text)
    with pytest.raises(ValueError, match=f"heads.json is not a readable functional-heads head map: it holds {literal}"):
        fh.HeadMap.load(tmp_path / "heads.json")


def test_head_maps_made_in_python_are_checked_too():
    perception = torch.zeros(4, 4, dtype=torch.bool)
    perception[2, 1] = True
    with pytest.raises(ValueError, match="head 1 of layer 2 is listed as both"):
        fh.HeadMap(perception, perception.clone(), CFG)
    with pytest.raises(ValueError, match="layer_gains holds 2 gains but the map has 4 layers"):
        fh.HeadMap(perception, torch.zeros(4, 4, dtype=torch.bool),
                   fh.RescaleConfig(1, 2, 0.5, 0.1, layer_gains=(1.1, 1.2)))
    with pytest.raises(ValueError, match="must be masks of one shape"):
        fh.HeadMap(perception, torch.zeros(3, 4, dtype=torch.bool), CFG)


def test_save_never_leaves_a_torn_file(tmp_path, monkeypatch):
    """A write that fails half way (a full disk) leaves the previous map whole and no temporary file."""
    import os

    heads = fh.identify_heads(hand_ratios(), CFG, "qwen2_5_vl")
    heads.save(tmp_path / "heads.json")
    before = (tmp_path / "heads.json").read_text()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fh.identify_heads(1 - hand_ratios(), CFG).save(tmp_path / "heads.json")
    assert (tmp_path / "heads.json").read_text() == before and os.listdir(tmp_path) == ["heads.json"]
    monkeypatch.undo()
    nan = hand_ratios()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="S_v ratios are not all finite"):
        fh.HeadMap(heads.perception, heads.reasoning, CFG, ratios=nan).save(tmp_path / "nan.json")


def test_inert_maps_say_why_they_change_nothing():
    heads = fh.identify_heads(hand_ratios(), CFG)
    assert heads.inert_warning() is None
    ones = fh.identify_heads(hand_ratios(), fh.RescaleConfig(1, 2, 0.5, 0.1))
    assert ones.inert_warning("x.json") == ("x.json changes nothing: its gains are 1 (g_perc=1, g_reas=1), so "
                                            "rescaled runs equal vanilla.")
    above_zero = hand_ratios() + 0.005  # no S_v of 0: tau_reas=0 selects no reasoning head
    none = fh.identify_heads(above_zero, fh.RescaleConfig(1, 2, 0.99, 0.0, 1.2, 1.4))
    assert "it selects no head" in none.inert_warning()
    # perception heads only, and only the reasoning gain differs from 1: still nothing changes
    perception_only = fh.identify_heads(above_zero, fh.RescaleConfig(1, 2, 0.5, 0.0, 1.0, 1.4))
    assert not perception_only.reasoning.any() and "gains are 1" not in perception_only.inert_warning()
    assert "every selected head's gain is 1" in perception_only.inert_warning()
    assert heads.only("perception").inert_warning() is None


def test_calibrate_from_file_warns_when_the_map_changes_nothing(qwen_folder, tmp_path):
    import warnings

    import numpy as np
    from PIL import Image

    from functional_heads.core.heads import calibrate_from_file
    from functional_heads.utils.errors import FunctionalHeadsWarning

    Image.fromarray(np.full((16, 16, 3), 120, dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "calib.jsonl").write_text(json.dumps({"image": "a.png", "prompt": "how many shapes ?"}) + "\n")
    with pytest.warns(FunctionalHeadsWarning, match="changes nothing: its gains are 1"):
        calibrate_from_file(qwen_folder, tmp_path / "calib.jsonl", fh.RescaleConfig(1, 2, 0.5, 0.4), progress=False)
    from functional_heads.core.heads import UnusualShareWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", FunctionalHeadsWarning)
        warnings.simplefilter("ignore", UnusualShareWarning)  # every head of the tiny model: a share warning only
        calibrate_from_file(qwen_folder, tmp_path / "calib.jsonl", fh.RescaleConfig(1, 2, 0.0, 0.0, 1.2),
                            progress=False)


def test_a_static_map_selecting_an_unusual_share_of_heads_warns_in_one_line():
    from functional_heads.core.heads import UNUSUAL_SHARE, UnusualShareWarning

    with pytest.warns(UnusualShareWarning) as caught:
        heads = fh.identify_heads(hand_ratios(), CFG)  # 8 of 16 heads
    assert heads.share_selected > UNUSUAL_SHARE and len(caught) == 1
    message = str(caught[0].message)
    assert "selects 50% of all heads" in message and "\n" not in message
    sparse = fh.RescaleConfig(perc_last_layer=1, reas_first_layer=2, tau_perc=0.9, tau_reas=0.0)  # 2 of 16
    ratios = torch.stack([hand_ratios(), 1 - hand_ratios()])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusualShareWarning)
        assert fh.identify_heads(hand_ratios(), sparse).share_selected <= UNUSUAL_SHARE  # a usual share: silent
        fh.identify_heads(hand_ratios(), CFG, warn=False)  # a tuning study's draws
        fh.identify_heads(ratios, CFG)  # per-input maps (dynamic rescaling) are not warned about


def test_quickstart_selects_about_the_papers_share_of_heads_on_the_bundled_model():
    """examples/quickstart.py, as the README runs it on a model folder: no unusual share, no warning."""
    import runpy
    from pathlib import Path

    quickstart = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "quickstart.py"))["quickstart"]
    from functional_heads.evaluation.benchmarks import shapes_generator

    image = next(shapes_generator.items("test", n=1)).scene.render()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", UserWarning)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            quickstart(fh.bundled_model_path(), image)
    share = float(printed.getvalue().split("selected: ")[1].split("%")[0]) / 100
    assert 0.03 <= share <= 0.1
