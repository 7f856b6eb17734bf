"""A head map for another model at the same dose: the settings of SOURCE's head map, with thresholds that
select the same share of heads of each class, in the same layer bands, on TARGET's calibrated S_v.

    python scripts/dose_matched_heads.py SOURCE_HEADS.json TARGET_HEADS.json OUT_HEADS.json

Both head maps come from `fheads calibrate` (on the same calibration items); the output keeps TARGET's S_v.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import functional_heads as fh  # noqa: E402
from functional_heads.core.heads import dose_matched  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the head map whose share of heads is matched")
    parser.add_argument("target", type=Path, help="the other model's head map (its S_v are used)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    source, target = fh.HeadMap.load(args.source), fh.HeadMap.load(args.target)
    config = dose_matched(source.config, source.ratios, target.ratios)
    matched = fh.identify_heads(target.ratios, config, target.model_type)
    matched.num_samples = target.num_samples
    matched.save(args.out)
    print(f"{args.out}: {int(matched.perception.sum())} perception and {int(matched.reasoning.sum())} reasoning "
          f"heads (source: {int(source.perception.sum())} and {int(source.reasoning.sum())}), "
          f"tau_perc {config.tau_perc:.6f}, tau_reas {config.tau_reas:.6f}")


if __name__ == "__main__":
    main()
