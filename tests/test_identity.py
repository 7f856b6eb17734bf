"""models/identity.py: a model folder identified by what it holds, not where it lies."""

import os
import shutil

import pytest

from functional_heads.models import identity
from functional_heads.models.identity import model_files, model_fingerprint
from functional_heads.testbed.bundled import bundled_model_path


@pytest.fixture
def copy(tmp_path):
    return shutil.copytree(bundled_model_path(), tmp_path / "a")


def test_copies_agree_and_each_file_that_decides_answers_counts(copy, tmp_path):
    original = model_fingerprint(bundled_model_path())
    assert original["model_type"] == "qwen2_5_vl" and len(original["content"]) == 32
    assert model_fingerprint(copy) == original
    (copy / "MODEL_CARD.md").write_text("notes")  # not part of the model
    (copy / "settings.json").write_text("{}")
    assert model_fingerprint(copy) == original
    for name in ("config.json", "chat_template.jinja", "model.safetensors", "generation_config.json"):
        changed = shutil.copytree(copy, tmp_path / f"changed-{name}")
        with open(changed / name, "ab") as handle:
            handle.write(b" ")
        assert model_fingerprint(changed) != original, name


def test_weights_rewritten_in_place_are_noticed_and_unchanged_files_read_once(copy, monkeypatch):
    before = model_fingerprint(copy)
    reads = []
    monkeypatch.setattr(identity, "_hashed", lambda path, real=identity._hashed: reads.append(path.name) or real(path))
    assert model_fingerprint(copy) == before and reads == []  # memoised: nothing read again
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a new mtime even on a coarse clock
    assert model_fingerprint(copy) != before and reads == ["model.safetensors"]


def test_which_files_are_hashed(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "pytorch_model.bin", "optimizer.pt", "training_args.bin", "rng_state.pth",
                 "tokenizer.json", "README.md", "settings.json"):
        (folder / name).write_text(name)
    assert [f.name for f in model_files(folder)] == ["config.json", "pytorch_model.bin", "tokenizer.json"]
    (folder / "model.safetensors").write_text("w")  # what transformers loads when it is there
    assert [f.name for f in model_files(folder)] == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="not a local model folder"):
        model_fingerprint(tmp_path)
