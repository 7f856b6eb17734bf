"""MMStar val (1500 multiple-choice items, options inline in the question, answers A-D).

Follows MMStar's own evaluation and VLMEvalKit's (`vlmeval/dataset/image_mcq.py`, MMStar): the headline is
plain accuracy over the items, with accuracy per core category (coarse perception, fine-grained
perception, instance reasoning, logical reasoning, math, science & technology). lmms-eval reports the
mean of the l2-category accuracies instead, a different number: it is kept as `l2_category_mean`, named
as such. Prompt: the question and "Answer with the option's letter from the given choices directly."
Score: the letter.
"""

from __future__ import annotations

from . import answers
from .base import Benchmark, Example, Scored, mean_or_none


class MMStar(Benchmark):
    name = "mmstar"
    default_split = "val"
    instruction = "Answer with the option's letter from the given choices directly."

    def example(self, row, index):
        return Example(str(row["index"]), row["image"], f"{row['question']}\n{self.instruction}",
                       str(row["answer"]).strip().upper(), str(row.get("category", "")),
                       {"l2_category": str(row.get("l2_category", ""))})

    def score(self, example, output):
        letter = answers.choice_letter(output, None)
        return Scored(letter, float(letter == example.gold))

    def metrics(self, records):
        result = super().metrics(records)  # accuracy over the items, per core category
        l2 = sorted({r.get("info", {}).get("l2_category", "") for r in records} - {""})
        result["l2_categories"] = {c: mean_or_none(r["score"] for r in records if r.get("info", {}).get("l2_category") == c)
                                   for c in l2}
        result["l2_category_mean"] = mean_or_none(result["l2_categories"].values()) if l2 else None  # lmms-eval's number
        return result
