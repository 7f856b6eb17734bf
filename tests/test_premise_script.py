"""scripts/premise.py (the premise measurements) on the two bundled models, a few dev items."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import functional_heads as fh
from functional_heads.testbed.bundled import REASONING_TUNED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_premise_script_compares_two_models_along_their_chains(tmp_path):
    base, tuned = fh.bundled_model_path(), fh.bundled_model_path(REASONING_TUNED)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "premise.py"), "--model", str(base), "--model", str(tuned),
                    "--items", "6", "--out", str(tmp_path)], check=True, capture_output=True)
    result = json.loads((tmp_path / "premise.json").read_text())
    assert result["items"] == 6 and list(result["summaries"]) == [base.name, tuned.name]
    for summary in result["summaries"].values():
        assert len(summary["positions"]) == 5 and len(summary["mean_sv_by_layer"][0]) == 8  # positions x layers
        assert all(0 < v < 1 for row in summary["mean_sv_by_layer"] for v in row)
    assert len(result["difference"]["shallow_half"]) == 5 and result["difference"]["accuracy"]["n"] == 6
    assert "| i* (end of prompt) |" in (tmp_path / "premise.md").read_text()
