"""training/store_float16.py: a model folder's weights stored in float16, loaded and computed in float32."""

import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import functional_heads as fh

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "store_float16.py"


def test_weights_are_stored_in_float16_and_load_as_float32(qwen_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(qwen_folder, folder)
    before = load_file(folder / "model.safetensors")
    done = subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, check=True)
    assert "float16" in done.stdout
    after = load_file(folder / "model.safetensors")
    assert set(after) == set(before)
    for name, tensor in after.items():
        assert tensor.dtype == (torch.float16 if before[name].is_floating_point() else before[name].dtype), name
        torch.testing.assert_close(tensor.float(), before[name].float(), atol=1e-3, rtol=1e-3)
    model = fh.load_model(folder)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in Path(qwen_folder).iterdir())


def test_a_folder_without_weights_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "model.safetensors does not exist" in done.stderr
