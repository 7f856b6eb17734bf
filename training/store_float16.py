"""Store a trained model folder's weights in float16, in place: half the bytes in the repository. The config's
dtype stays float32, so every load (`fh.load_model`, `fheads`, vLLM) upcasts them and computes in float32;
the rounded weights are the model from then on (every evaluation of it reads them).

    python training/store_float16.py MODEL_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functional_heads.utils.files import atomic_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    args = parser.parse_args()
    path = args.model / "model.safetensors"
    if not path.is_file():
        parser.error(f"{path} does not exist: give a model folder with one model.safetensors")
    weights = load_file(path)
    half = {name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in weights.items()}
    for name, tensor in half.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            parser.error(f"{name} does not fit float16 (values beyond its range); the folder is left as it was")
    error = max(float((half[n].float() - t.float()).abs().max()) for n, t in weights.items() if t.is_floating_point())
    with atomic_path(path) as tmp:
        save_file(half, str(tmp), metadata={"format": "pt"})
    print(f"{path}: {len(half)} tensors in float16, largest rounding change {error:.2e}")


if __name__ == "__main__":
    main()
