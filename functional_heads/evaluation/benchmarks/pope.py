"""POPE: yes/no object-existence probes over COCO images, in three splits of negatives (random, popular,
adversarial; 3000 each).

Follows POPE's own evaluation script (repository RUCAIBox/POPE, `evaluate.py`; the same rule as
LLaVA's `llava/eval/eval_pope.py`). Prompt: the question and "Answer yes or no." Metrics per split and
overall: accuracy, precision, recall and F1 with "yes" as the positive class, and the share of "yes"
among the model's answers (not among the gold answers).

Reading an answer. Ours: the first of "yes", "no" or a negation ("not", "n't") in the final answer;
an answer with none of them is unanswered (wrong, and counted). The official rule keeps the first
sentence, drops commas, splits on spaces and reads "No", "no" or "not" as no and *everything else*,
including an answer with neither word, as yes. Both are reported: our metrics, and `official_rule` beside
them, computed from the same predictions.
"""

from __future__ import annotations

import re

from . import answers
from .base import Benchmark, Example, Scored


class POPE(Benchmark):
    name = "pope"
    default_split = "test"
    instruction = "Answer yes or no."

    def example(self, row, index):
        # lmms-eval's copy has no `id`, and its question_ids repeat across the three splits
        ident = row.get("id") or f"{row.get('category', '')}-{row['question_id']}".lstrip("-")
        return Example(str(ident), row["image"], f"{row['question']} {self.instruction}",
                       str(row["answer"]).strip().lower(), str(row.get("category", "")))

    def score(self, example, output):
        said = read_yes_no(output)
        return Scored(said, float(said == example.gold))

    def metrics(self, records):
        result = {"overall": confusion_metrics(records)}
        for split in sorted({r.get("category", "") for r in records} - {""}):
            result[split] = confusion_metrics([r for r in records if r.get("category") == split])
        official = [{**r, "extracted": official_reading(r.get("prediction") or "")} for r in records]
        official = [{**r, "score": float(r["extracted"] == r["gold"])} for r in official]
        result["official_rule"] = {"overall": confusion_metrics(official)}
        for split in sorted({r.get("category", "") for r in records} - {""}):
            result["official_rule"][split] = confusion_metrics([r for r in official if r.get("category") == split])
        base = super().metrics(records)
        result["accuracy"], result["ci95"] = result["overall"]["accuracy"], base["ci95"]
        result["official_accuracy"] = result["official_rule"]["overall"]["accuracy"]
        result["unanswered_rate"] = result["overall"]["unanswered"] / len(records) if records else None
        if "truncated_rate" in base:
            result["truncated_rate"] = base["truncated_rate"]
        return result


def read_yes_no(output: str) -> str | None:
    """Our reading: the first yes / no / negation word of the final answer; None if it has none."""
    answer = answers.final_answer(output)
    words = re.findall(r"\b(yes|no|not)\b|n't\b", answer.lower()) if answer is not None else []
    if not words:
        return None
    return "yes" if words[0] == "yes" else "no"


def official_reading(output: str) -> str:
    """POPE's own rule, applied to the final answer (to the whole output when it has none)."""
    text = answers.final_answer(output)
    text = output if text is None else text
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def confusion_metrics(records: list[dict]) -> dict:
    said_yes = [r["extracted"] == "yes" for r in records]
    gold_yes = [r["gold"] == "yes" for r in records]
    tp = sum(s and g for s, g in zip(said_yes, gold_yes))
    fp = sum(s and not g for s, g in zip(said_yes, gold_yes))
    fn = sum(not s and g for s, g in zip(said_yes, gold_yes))
    n = len(records)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": sum(r["score"] for r in records) / n if n else None, "precision": precision,
            "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": sum(said_yes) / n if n else None,
            "unanswered": sum(r["extracted"] not in ("yes", "no") for r in records), "n": n}
