import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402
from functional_heads.testing import save_tiny_qwen2_5_vl  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """Build each tiny architecture once per session; tests must leave the model as they found it."""
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = tiny_models.build(arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"))
