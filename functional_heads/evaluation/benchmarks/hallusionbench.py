"""HallusionBench, image split (951 yes/no questions over figures, some of them edited).

Prompt: the question and "Answer yes or no." Gold `gt_answer` "1" is yes, "0" no. Metrics as the
benchmark reports them: aAcc (per question), fAcc (a figure counts when every question on it is right;
key category_subcategory_set_figure; visual-supplement items with figure 0 are left out) and qAcc (a
question counts when it is right on every figure; key category_subcategory_set_question).
"""

from __future__ import annotations

from collections import defaultdict

from .. import answers
from .base import Benchmark, Example, Scored, _mean


class HallusionBench(Benchmark):
    name = "hallusionbench"
    default_split = "image"
    instruction = "Answer yes or no."

    def example(self, row, index):
        keys = {k: str(row[k]) for k in ("category", "subcategory", "set_id", "figure_id", "question_id")}
        gold = {"1": "yes", "0": "no"}[str(row["gt_answer"])]
        ident = "_".join(keys[k] for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        return Example(ident, row.get("image") or row.get("filename"), f"{row['question']} {self.instruction}", gold,
                       keys["category"], keys)

    def score(self, example, output):
        said = answers.yes_no(output)
        return Scored(said, float(said == example.gold))

    def metrics(self, records):
        result = super().metrics(records)
        result["aAcc"] = result["accuracy"]
        figures, questions = defaultdict(list), defaultdict(list)
        for r in records:
            k = r["info"]
            if not (k["category"] == "VS" and k["figure_id"] == "0"):
                figures["_".join((k["category"], k["subcategory"], k["set_id"], k["figure_id"]))].append(r["score"])
            questions["_".join((k["category"], k["subcategory"], k["set_id"], k["question_id"]))].append(r["score"])
        result["fAcc"] = _mean(float(all(s)) for s in figures.values())
        result["qAcc"] = _mean(float(all(s)) for s in questions.values())
        return result
