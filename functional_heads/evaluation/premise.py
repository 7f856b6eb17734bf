"""The paper's premise, measured: does a model stop looking at the image as its chain of thought goes on, and
does it make perceptual errors? S_v at i* (the end of the prompt) and at fractions of the model's own answer,
fed back after its prompt, beside its accuracy and failure rates; two models compared on the same items with
paired tests."""

from __future__ import annotations

from typing import Sequence

import torch

from ..core.ratios import visual_attention_ratios
from ..models.loading import prompt_inputs, to_model_device
from ..utils.progress import progress as progress_lines
from .stats import mcnemar, paired_difference

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
POSITION_NAMES = ("i* (end of prompt)",) + tuple(f"{int(f * 100)}% of the chain" for f in FRACTIONS)
FAILURES = ("perceptual", "drift")


def chain_positions(prompt_lengths: torch.Tensor, full_mask: torch.Tensor,
                    fractions: Sequence[float] = FRACTIONS) -> torch.Tensor:
    """[batch, 1 + len(fractions)] absolute positions in left-padded prompt+answer rows: i* (the prompt's last
    token), then the answer token at each fraction of the answer's length (at least its first token)."""
    width = full_mask.shape[1]
    pad = width - full_mask.sum(-1)
    start = pad + prompt_lengths - 1
    length = (width - 1) - start
    steps = [start] + [start + torch.clamp(torch.round(f * length.double()).long(), min=1) for f in fractions]
    return torch.minimum(torch.stack(steps, 1), torch.tensor(width - 1))


@torch.no_grad()
def attention_along_answers(model, processor, images: Sequence, prompts: Sequence[str], answers: Sequence[str],
                            batch_size: int = 16, fractions: Sequence[float] = FRACTIONS,
                            progress: bool = False) -> torch.Tensor:
    """S_v [items, 1 + len(fractions), layers, heads] of each item's answer at i* and along the answer."""
    out = []
    with progress_lines("S_v along the answers", len(prompts), unit="items", enabled=progress) as advance:
        for lo in range(0, len(prompts), batch_size):
            rows = slice(lo, lo + batch_size)
            prompt_only = prompt_inputs(processor, images[rows], prompts[rows])
            full = prompt_inputs(processor, images[rows], prompts[rows], replies=answers[rows])
            positions = chain_positions(prompt_only["attention_mask"].sum(-1), full["attention_mask"], fractions)
            out.append(visual_attention_ratios(model, to_model_device(full, model), positions=positions).float().cpu())
            advance(len(out[-1]))
    return torch.cat(out)


def along_records(model, processor, examples: Sequence, records: dict, progress: bool = False
                  ) -> tuple[list[dict], torch.Tensor]:
    """The examples' records (`records`: by id, e.g. a vanilla run's) and S_v along their predictions."""
    chosen = [records[e.id] for e in examples]
    sv = attention_along_answers(model, processor, [e.load_image() for e in examples], [e.prompt for e in examples],
                                 [r["prediction"] for r in chosen], progress=progress)
    return chosen, sv


def summary(records: Sequence[dict], ratios: torch.Tensor) -> dict:
    """Accuracy, failure rates and mean S_v (over items and heads) by position and layer, with the shallow
    and deep halves of the layers."""
    by_layer = ratios.mean(-1).mean(0)  # [positions, layers]
    half = by_layer.shape[1] // 2
    return {"items": len(records), "accuracy": sum(bool(r["score"]) for r in records) / len(records),
            **{kind: sum(r.get("failure") == kind for r in records) / len(records) for kind in FAILURES},
            "positions": list(POSITION_NAMES[:by_layer.shape[0]]), "mean_sv_by_layer": by_layer.tolist(),
            "shallow_half": by_layer[:, :half].mean(-1).tolist(), "deep_half": by_layer[:, half:].mean(-1).tolist()}


def compare(base: tuple[Sequence[dict], torch.Tensor], tuned: tuple[Sequence[dict], torch.Tensor]) -> dict:
    """Tuned minus base on the same items (in the same order): accuracy and each failure (McNemar), and mean S_v
    of each half of the layers at each position (paired bootstrap over items)."""
    (a_records, a_sv), (b_records, b_sv) = base, tuned
    if [r["id"] for r in a_records] != [r["id"] for r in b_records]:
        raise ValueError("the two models' records are not the same items in the same order")
    out = {"accuracy": _paired_rate(a_records, b_records, lambda r: bool(r["score"]))}
    for kind in FAILURES:
        out[kind] = _paired_rate(a_records, b_records, lambda r, k=kind: r.get("failure") == k)
    half = a_sv.shape[2] // 2
    for name, layers in (("shallow_half", slice(0, half)), ("deep_half", slice(half, None))):
        a, b = a_sv[:, :, layers].mean((-1, -2)), b_sv[:, :, layers].mean((-1, -2))  # [items, positions]
        out[name] = [paired_difference(a[:, k].tolist(), b[:, k].tolist()) for k in range(a.shape[1])]
    return out


def _paired_rate(a_records, b_records, event) -> dict:
    a, b = [event(r) for r in a_records], [event(r) for r in b_records]
    return {**paired_difference([float(x) for x in a], [float(x) for x in b]), "mcnemar": mcnemar(a, b)}


def premise_markdown(summaries: dict[str, dict], difference: dict | None = None) -> str:
    """Side-by-side tables: rates, then S_v by position for each half of the layers, then by layer."""
    names = list(summaries)
    rows = ["| | " + " | ".join(names) + (" | difference (second - first) [95% CI], McNemar p |" if difference else " |"),
            "|---" * (len(names) + 1 + bool(difference)) + "|"]
    for key in ("accuracy", *FAILURES):
        cells = [f"{summaries[n][key]:.1%}" for n in names]
        if difference:
            d = difference[key]
            cells.append(f"{d['mean']:+.1%} [{d['ci'][0]:+.1%}, {d['ci'][1]:+.1%}], p={d['mcnemar']['p']:.3g}")
        rows.append(f"| {'accuracy' if key == 'accuracy' else key + ' errors' if key == 'perceptual' else 'reasoning drift'}"
                    f" | " + " | ".join(cells) + " |")
    positions = summaries[names[0]]["positions"]
    rows += ["", "Mean S_v (attention on the image tokens, mean over heads) by position in the answer:", "",
             "| position | " + " | ".join(f"{n}: {h} layers" for n in names for h in ("shallow", "deep"))
             + (" | difference shallow [95% CI] | difference deep [95% CI] |" if difference else " |"),
             "|---" * (1 + 2 * len(names) + 2 * bool(difference)) + "|"]
    for k, position in enumerate(positions):
        cells = [f"{summaries[n][h][k]:.3f}" for n in names for h in ("shallow_half", "deep_half")]
        if difference:
            cells += [f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                      for d in (difference["shallow_half"][k], difference["deep_half"][k])]
        rows.append(f"| {position} | " + " | ".join(cells) + " |")
    for n in names:
        layers = len(summaries[n]["mean_sv_by_layer"][0])
        rows += ["", f"{n}: mean S_v by layer", "", "| position | " + " | ".join(f"layer {i}" for i in range(layers)) + " |",
                 "|---" * (layers + 1) + "|"]
        rows += [f"| {p} | " + " | ".join(f"{v:.3f}" for v in summaries[n]["mean_sv_by_layer"][k]) + " |"
                 for k, p in enumerate(positions)]
    return "\n".join(rows) + "\n"
