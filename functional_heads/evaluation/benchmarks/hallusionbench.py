"""HallusionBench: 951 yes/no questions over figures (some of them edited) and 178 asked without a figure.

Follows the benchmark's own evaluation (repository tianyi-lab/HallusionBench, `utils.py`: `get_eval_all`,
`get_eval_fig`, `get_eval_pair_all`; its item key category_subcategory_set_figure_question), whose leaderboard covers both parts: by default both splits of the local
copy are read (`--split all`; `image` or `non_image` for one part). Questions without a figure
(`visual_input` 0) are asked as text-only prompts. Prompt: the question and "Answer yes or no." Gold
`gt_answer` "1" is yes, "0" no. Metrics: aAcc (per question), fAcc (a figure counts when every question
on it is right; key category_subcategory_set_figure; visual-supplement items with figure 0, the
questions without a figure, are left out) and qAcc (a question counts when it is right on every figure;
key category_subcategory_set_question), each overall and per part (VD, VS) as the official tables give them.
The official path grades each answer correct, incorrect or unclear with a GPT judge; here the first yes or
no of the final answer is the answer and one with neither is unclear (the optional judge stands in for the
extraction). As `assign_correctness` rules, an unclear answer is right for a question asked without a
figure (VS, figure 0: not knowing is allowed there) and wrong everywhere else.
"""

from __future__ import annotations

from collections import defaultdict

from . import answers
from .base import ALL_SPLITS, Benchmark, Example, Scored, mean_or_none


class HallusionBench(Benchmark):
    name = "hallusionbench"
    default_split = ALL_SPLITS
    instruction = "Answer yes or no."

    def example(self, row, index):
        keys = {k: str(row[k]) for k in ("category", "subcategory", "set_id", "figure_id", "question_id")}
        gold = {"1": "yes", "0": "no"}[str(row["gt_answer"])]
        ident = "_".join(keys[k] for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        with_figure = str(row.get("visual_input", "1")) != "0"
        image = (row.get("image") or row.get("filename")) if with_figure else None
        return Example(ident, image, f"{row['question']} {self.instruction}", gold, keys["category"], keys)

    def score(self, example, output):
        said = answers.yes_no(output)
        if said is None:  # the official judge's "unclear"
            return Scored(None, float(_without_figure(example.info)), "unclear")
        return Scored(said, float(said == example.gold))

    def metrics(self, records):
        result = super().metrics(records)
        result.update(_official_accuracies(records))
        result["unclear_rate"] = mean_or_none(r.get("failure") == "unclear" for r in records)
        parts = sorted({r["info"]["category"] for r in records})
        result["parts"] = {part: _official_accuracies([r for r in records if r["info"]["category"] == part])
                           for part in parts}
        return result


def _without_figure(keys: dict) -> bool:
    return keys["category"] == "VS" and keys["figure_id"] == "0"


def _official_accuracies(records: list[dict]) -> dict:
    """aAcc per question, fAcc per figure (questions without a figure left out), qAcc per question pair."""
    figures, questions = defaultdict(list), defaultdict(list)
    for r in records:
        k = r["info"]
        if not _without_figure(k):
            figures["_".join((k["category"], k["subcategory"], k["set_id"], k["figure_id"]))].append(r["score"])
        questions["_".join((k["category"], k["subcategory"], k["set_id"], k["question_id"]))].append(r["score"])
    return {"aAcc": mean_or_none([r["score"] for r in records]),
            "fAcc": mean_or_none(float(all(s)) for s in figures.values()),
            "qAcc": mean_or_none(float(all(s)) for s in questions.values())}
