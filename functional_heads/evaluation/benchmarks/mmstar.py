"""MMStar val (1500 multiple-choice items, options inline in the question, answers A-D).

Prompt: the question and "Answer with the option's letter from the given choices directly." Score: the
letter. Metric as MMStar reports it: the mean over `l2_category` of each category's accuracy (plain
accuracy beside it).
"""

from __future__ import annotations

from .. import answers
from .base import Benchmark, Example, Scored, _mean


class MMStar(Benchmark):
    name = "mmstar"
    default_split = "val"
    instruction = "Answer with the option's letter from the given choices directly."

    def example(self, row, index):
        return Example(str(row["index"]), row["image"], f"{row['question']}\n{self.instruction}",
                       str(row["answer"]).strip().upper(), str(row.get("l2_category") or row.get("category", "")),
                       {"category": str(row.get("category", ""))})

    def score(self, example, output):
        letter = answers.choice_letter(output, None)
        return Scored(letter, float(letter == example.gold))

    def metrics(self, records):
        result = super().metrics(records)
        result["item_accuracy"] = result["accuracy"]
        result["accuracy"] = _mean(result.get("categories", {}).values()) if result.get("categories") else result["accuracy"]
        result["metric"] = "mean of l2_category accuracies"
        return result
