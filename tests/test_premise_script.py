"""scripts/premise.py (issue 14's premise measurements) on the bundled model, a few dev items."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_premise_script_measures_attention_along_the_chain(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "premise.py"), "--items", "4", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    summary = json.loads((tmp_path / "premise.json").read_text())
    assert summary["items"] == 4 and len(summary["positions"]) == 5
    assert len(summary["mean_sv_by_layer"]) == 5 and len(summary["mean_sv_by_layer"][0]) == 8  # positions x layers
    assert all(0 < v < 1 for row in summary["mean_sv_by_layer"] for v in row)
    assert "| i* (end of prompt) |" in (tmp_path / "premise.md").read_text()
