"""The paper's premise, measured: does a model stop looking at the image as its chain of thought goes on, and
does it make perceptual errors? S_v at i* (the end of the prompt) and at fractions of an answer fed back after
its prompt (the model's own, or one reference answer for every model, so that models share positions),
beside its accuracy and failure rates; two models compared on the same items with paired tests.

S_v is attention mass on the image tokens, and the context grows along the answer: uniform attention alone
falls as the image's share of the context falls. So every S_v comes beside its length-normalised form,
S_v divided by the image tokens' share of the context the query attends to (1 for uniform attention,
above 1 where the head favours the image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.ratios import visual_attention_ratios
from ..models.architectures import locate
from ..models.loading import prompt_inputs, to_model_device
from ..utils.progress import progress as progress_lines
from .benchmarks.shapes_generator import FAILURES
from .stats import holm, mcnemar, paired_difference

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
POSITION_NAMES = ("i* (end of prompt)",) + tuple(f"{int(f * 100)}% of the chain" for f in FRACTIONS)
MEASURES = ("sv", "normalised_sv")


@dataclass
class AlongAnswers:
    """S_v [items, positions, layers, heads] at i* and along the answers, and the image tokens' share of
    the context each of those queries attends to [items, positions]."""

    ratios: torch.Tensor
    image_share: torch.Tensor

    @property
    def normalised(self) -> torch.Tensor:
        return self.ratios / self.image_share[:, :, None, None]

    def measure(self, name: str) -> torch.Tensor:
        return self.ratios if name == "sv" else self.normalised


def image_share(input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                image_token_id: int) -> torch.Tensor:
    """[batch, k]: the image tokens' share of the (unpadded) tokens up to and including each position."""
    is_image = ((input_ids == image_token_id) & attention_mask.bool()).long().cumsum(-1)
    present = attention_mask.long().cumsum(-1)
    return (is_image.gather(1, positions) / present.gather(1, positions)).float()


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
                            progress: bool = False) -> AlongAnswers:
    """S_v of each item's answer at i* and at `fractions` of the answer, with the image's share there."""
    ratios, shares = [], []
    image_token_id = locate(model).image_token_id
    with progress_lines("S_v along the answers", len(prompts), unit="items", enabled=progress) as advance:
        for lo in range(0, len(prompts), batch_size):
            rows = slice(lo, lo + batch_size)
            prompt_only = prompt_inputs(processor, images[rows], prompts[rows])
            full = prompt_inputs(processor, images[rows], prompts[rows], replies=answers[rows])
            positions = chain_positions(prompt_only["attention_mask"].sum(-1), full["attention_mask"], fractions)
            ratios.append(visual_attention_ratios(model, to_model_device(full, model), positions=positions).float().cpu())
            shares.append(image_share(full["input_ids"], full["attention_mask"], positions, image_token_id))
            advance(len(ratios[-1]))
    return AlongAnswers(torch.cat(ratios), torch.cat(shares))


def along_records(model, processor, examples: Sequence, records: dict, answers: Sequence[str] | None = None,
                  progress: bool = False) -> tuple[list[dict], AlongAnswers]:
    """The examples' records (`records`: by id, e.g. a vanilla run's) and S_v along their predictions, or
    along `answers` (one per example, e.g. reference answers teacher-forced into every model)."""
    chosen = [records[e.id] for e in examples]
    answers = [r["prediction"] for r in chosen] if answers is None else list(answers)
    along = attention_along_answers(model, processor, [e.load_image() for e in examples],
                                    [e.prompt for e in examples], answers, progress=progress)
    return chosen, along


def summary(records: Sequence[dict], along: AlongAnswers) -> dict:
    """Accuracy, failure rates and mean S_v and normalised S_v (over items and heads) by position and layer,
    with the shallow and deep halves of the layers, and the image's mean share of the context by position."""
    out = {"items": len(records), "accuracy": sum(bool(r["score"]) for r in records) / len(records),
           **{kind: sum(r.get("failure") == kind for r in records) / len(records) for kind in FAILURES},
           "positions": list(POSITION_NAMES[:along.ratios.shape[1]]),
           "image_share": along.image_share.mean(0).tolist()}
    for measure in MEASURES:
        by_layer = along.measure(measure).mean(-1).mean(0)  # [positions, layers]
        half = by_layer.shape[1] // 2
        prefix = "" if measure == "sv" else "normalised_"
        out.update({f"{prefix}mean_sv_by_layer": by_layer.tolist(),
                    f"{prefix}shallow_half": by_layer[:, :half].mean(-1).tolist(),
                    f"{prefix}deep_half": by_layer[:, half:].mean(-1).tolist()})
    return out


def compare(base: tuple[Sequence[dict], AlongAnswers], tuned: tuple[Sequence[dict], AlongAnswers]) -> dict:
    """Tuned minus base on the same items (in the same order): accuracy and each failure (McNemar), and mean S_v
    and normalised S_v of each half of the layers at each position (paired bootstrap over items)."""
    (a_records, a_along), (b_records, b_along) = base, tuned
    if [r["id"] for r in a_records] != [r["id"] for r in b_records]:
        raise ValueError("the two models' records are not the same items in the same order")
    out = {"accuracy": paired_rate(a_records, b_records, lambda r: bool(r["score"]))}
    for kind in FAILURES:
        out[kind] = paired_rate(a_records, b_records, lambda r, k=kind: r.get("failure") == k)
    rates = [out[key]["mcnemar"] for key in ("accuracy", *FAILURES)]  # the family of the rate tests
    for test, adjusted in zip(rates, holm([t["p"] for t in rates])):
        test["p_holm"] = adjusted
    for measure in MEASURES:
        a_sv, b_sv = a_along.measure(measure), b_along.measure(measure)
        half = a_sv.shape[2] // 2
        prefix = "" if measure == "sv" else "normalised_"
        for name, layers in (("shallow_half", slice(0, half)), ("deep_half", slice(half, None))):
            a, b = a_sv[:, :, layers].mean((-1, -2)), b_sv[:, :, layers].mean((-1, -2))  # [items, positions]
            out[prefix + name] = [paired_difference(a[:, k].tolist(), b[:, k].tolist()) for k in range(a.shape[1])]
    return out


def paired_rate(a_records, b_records, event) -> dict:
    """How often `event(record)` holds in b against a, item by item: the paired difference with its interval,
    and McNemar's test."""
    a, b = [event(r) for r in a_records], [event(r) for r in b_records]
    return {**paired_difference([float(x) for x in a], [float(x) for x in b]), "mcnemar": mcnemar(a, b)}


def premise_markdown(summaries: dict[str, dict], difference: dict | None = None) -> str:
    """Side-by-side tables: rates, then S_v by position for each half of the layers, then by layer."""
    names = list(summaries)
    rows = ["| | " + " | ".join(names) + (" | difference (second - first) [95% CI], McNemar p, Holm p over the "
                                          f"{1 + len(FAILURES)} rates |" if difference else " |"),
            "|---" * (len(names) + 1 + bool(difference)) + "|"]
    for key in ("accuracy", *FAILURES):
        cells = [f"{summaries[n][key]:.1%}" for n in names]
        if difference:
            d = difference[key]
            cells.append(f"{d['mean']:+.1%} [{d['ci'][0]:+.1%}, {d['ci'][1]:+.1%}], p={d['mcnemar']['p']:.3g}, "
                         f"Holm p={d['mcnemar']['p_holm']:.3g}")
        rows.append(f"| {_RATE_NAMES.get(key, key + ' errors')} | " + " | ".join(cells) + " |")
    positions = summaries[names[0]]["positions"]
    rows += ["", "The image tokens' share of the context at each position (uniform attention's S_v):", "",
             "| position | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    rows += [f"| {p} | " + " | ".join(f"{summaries[n]['image_share'][k]:.3f}" for n in names) + " |"
             for k, p in enumerate(positions)]
    for prefix, title in (("", "Mean S_v (attention on the image tokens, mean over heads)"),
                          ("normalised_", "Mean normalised S_v (S_v over the image's share of the context; 1 is "
                                          "uniform attention)")):
        rows += ["", f"{title} by position in the answer:", "",
                 "| position | " + " | ".join(f"{n}: {h} layers" for n in names for h in ("shallow", "deep"))
                 + (" | difference shallow [95% CI] | difference deep [95% CI] |" if difference else " |"),
                 "|---" * (1 + 2 * len(names) + 2 * bool(difference)) + "|"]
        for k, position in enumerate(positions):
            cells = [f"{summaries[n][prefix + h][k]:.3f}" for n in names for h in ("shallow_half", "deep_half")]
            if difference:
                cells += [f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                          for d in (difference[prefix + "shallow_half"][k], difference[prefix + "deep_half"][k])]
            rows.append(f"| {position} | " + " | ".join(cells) + " |")
    for n in names:
        layers = len(summaries[n]["mean_sv_by_layer"][0])
        rows += ["", f"{n}: mean S_v by layer", "", "| position | " + " | ".join(f"layer {i}" for i in range(layers)) + " |",
                 "|---" * (layers + 1) + "|"]
        rows += [f"| {p} | " + " | ".join(f"{v:.3f}" for v in summaries[n]["mean_sv_by_layer"][k]) + " |"
                 for k, p in enumerate(positions)]
    return "\n".join(rows) + "\n"


_RATE_NAMES = {"accuracy": "accuracy", "drift": "reasoning drift", "malformed": "malformed answers"}
