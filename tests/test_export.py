import json
import os
import shutil
import warnings

import pytest
import torch

import functional_heads as fh
from functional_heads.core import export as export_module
from functional_heads.core.heads import FOLDED_KEY, HEAD_MAP_FILE, folded_export
from functional_heads.utils.errors import FunctionalHeadsWarning, UserError

CFG = fh.RescaleConfig(perc_last_layer=1, reas_first_layer=2, tau_perc=0.5, tau_reas=0.1, g_perc=1.5, g_reas=1.25)


def tiny_map(cfg=CFG):
    """A map for the 4 x 4 tiny Qwen2.5-VL: two perception heads in layer 0, one reasoning head in layer 3."""
    perception, reasoning = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    perception[0, :2] = True
    reasoning[3, 1] = True
    return fh.HeadMap(perception, reasoning, cfg, "qwen2_5_vl")


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the model is loaded: refusals come before the weights."""
    monkeypatch.setattr(export_module, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


def another_checkpoint(folder):
    folder.mkdir()
    for i in range(1, 7):
        (folder / f"model-{i:05d}-of-00006.safetensors").write_bytes(b"weights %d" % i)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (folder / "config.json").write_text('{"model_type": "theirs"}')
    return folder


def test_a_non_empty_out_is_refused_and_left_as_it_was(qwen_folder, tmp_path, no_loading):
    theirs = another_checkpoint(tmp_path / "theirs")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_text("a file of the user's, named like a shard")
    (tmp_path / "a_file").write_text("mine")
    before = tree(tmp_path)
    for out, holds in ((theirs, "a checkpoint"), (mine, "1 entry")):
        with pytest.raises(UserError, match=f"--out {out} is not empty \\(it holds {holds}\\).*--overwrite"):
            fh.export_folded(qwen_folder, tiny_map(), out)
    with pytest.raises(UserError, match="a_file is a file, not a folder"):
        fh.export_folded(qwen_folder, tiny_map(), tmp_path / "a_file")
    with pytest.raises(UserError, match="holds the model being exported"):
        fh.export_folded(qwen_folder, tiny_map(), qwen_folder.parent, overwrite=True)
    with pytest.raises(UserError, match="is the model's own folder"):
        fh.export_folded(qwen_folder, tiny_map(), qwen_folder, overwrite=True)
    assert tree(tmp_path) == before  # the refusals touched nothing


def test_export_into_a_new_or_empty_folder_and_overwrite_replaces_the_whole_folder(qwen_folder, tmp_path):
    out = fh.export_folded(qwen_folder, tiny_map(), tmp_path / "new" / "folded")
    assert (out / "config.json").is_file() and (out / HEAD_MAP_FILE).is_file()
    (tmp_path / "empty").mkdir()
    fh.export_folded(qwen_folder, tiny_map(), tmp_path / "empty")
    assert tree(tmp_path / "empty").keys() == tree(out).keys()

    theirs = another_checkpoint(tmp_path / "theirs")
    fh.export_folded(qwen_folder, tiny_map(), theirs, overwrite=True)
    assert tree(theirs).keys() == tree(out).keys()  # no stale shard or index of the old checkpoint
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))  # no temporary or old folder left
    loaded = fh.load_model(theirs)
    assert loaded.config.model_type == "qwen2_5_vl"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_export_leaves_out_as_it_was(qwen_folder, tmp_path, monkeypatch, overwrite):
    """A full disk half way through (here: copying the tokenizer) leaves no half-written folder."""
    if overwrite:
        another_checkpoint(tmp_path / "out")
    before = tree(tmp_path)
    real = shutil.copy2

    def copy_then_fail(src, dst, **kwargs):
        real(src, dst, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module.shutil, "copy2", copy_then_fail)
    with pytest.raises(UserError, match=r"Could not write the export to .*out \(\[Errno 28\] No space left on "
                                        r"device\); .*out is left as it was"):
        fh.export_folded(qwen_folder, tiny_map(), tmp_path / "out", overwrite=overwrite)
    assert tree(tmp_path) == before


def test_export_marks_what_it_folded_and_leaves_the_projects_files_behind(qwen_folder, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(qwen_folder, source)
    for name in ("settings.json", "candidate.json", "heads.json", "tune.md"):
        (source / name).write_text("{}")
    out = fh.export_folded(source, tiny_map(), tmp_path / "folded")
    assert not {"settings.json", "candidate.json", "heads.json", "tune.md"} & set(os.listdir(out))
    assert (out / "tokenizer_config.json").is_file() or (out / "tokenizer.json").is_file()
    record = json.loads((out / "config.json").read_text())[FOLDED_KEY]
    assert record == {"head_map": HEAD_MAP_FILE, "gains": {"g_perc": 1.5, "g_reas": 1.25}, "heads_scaled": 3}
    assert folded_export(out) == record and folded_export(source) is None
    assert fh.HeadMap.load(out / HEAD_MAP_FILE).config == CFG

    with pytest.raises(UserError, match=r"folded export \(gains g_perc=1.5, g_reas=1.25 on 3 heads are already in "
                                        r"its weights\).*compound.*--allow-folded"):
        fh.export_folded(out, tiny_map(), tmp_path / "twice")
    assert not (tmp_path / "twice").exists()
    with pytest.warns(FunctionalHeadsWarning, match="compounds the gains"):  # allowed: fold() still says it
        fh.export_folded(out, tiny_map(), tmp_path / "twice", allow_folded=True)
    twice = json.loads((tmp_path / "twice" / "config.json").read_text())[FOLDED_KEY]
    assert twice["previous"] == record

    legacy = tmp_path / "legacy"  # an export from before the config record: known by its head map file
    shutil.copytree(out, legacy)
    config = json.loads((legacy / "config.json").read_text())
    del config[FOLDED_KEY]
    (legacy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="legacy is a folded export"):
        fh.export_folded(legacy, tiny_map(), tmp_path / "again")


def test_export_of_a_map_that_changes_nothing_warns(qwen_folder, tmp_path):
    with pytest.warns(FunctionalHeadsWarning, match="the head map changes nothing: its gains are 1"):
        fh.export_folded(qwen_folder, tiny_map(fh.RescaleConfig(1, 2, 0.5, 0.1)), tmp_path / "same")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FunctionalHeadsWarning)
        fh.export_folded(qwen_folder, tiny_map(), tmp_path / "changed")
