"""POPE: yes/no object-existence probes over COCO images, in three splits of negatives (random, popular,
adversarial; 3000 each).

Prompt: the question and "Answer yes or no." Metrics per split and overall, as POPE reports them:
accuracy, precision, recall and F1 with "yes" as the positive class, and the share of "yes" among the
model's answers (an answer with neither word counts as "no" here, and the count of such answers is given).
"""

from __future__ import annotations

from .. import answers
from .base import Benchmark, Example, Scored


class POPE(Benchmark):
    name = "pope"
    default_split = "test"
    instruction = "Answer yes or no."

    def example(self, row, index):
        ident = str(row.get("id") or row.get("question_id"))
        return Example(ident, row["image"], f"{row['question']} {self.instruction}", str(row["answer"]).strip().lower(),
                       str(row.get("category", "")))

    def score(self, example, output):
        said = answers.yes_no(output)
        return Scored(said, float(said == example.gold))

    def metrics(self, records):
        result = {"overall": confusion_metrics(records)}
        for split in sorted({r.get("category", "") for r in records} - {""}):
            result[split] = confusion_metrics([r for r in records if r.get("category") == split])
        result["accuracy"], result["ci95"] = result["overall"]["accuracy"], super().metrics(records)["ci95"]
        return result


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
